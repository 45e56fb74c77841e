"""Put a fitted posture rule into a bundle (docs/BUNDLE.md, "posture"), or take it out.

    python scripts/streamed_cv.py runs/cv/A --quiet --posture --posture-out posture.json   # fit it
    python scripts/bundle_posture.py edge/models/default posture.json                     # add it
    python scripts/bundle_posture.py edge/models/default --remove

bundle.json is replaced atomically (temporary file, fsync, rename) and the bundle is loaded again to check
it; the model files and so the bundle's model_id (and every wearer profile fitted on it) are unchanged.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge.bundle import BundleError, load_bundle  # noqa: E402
from edge.paths import write_text_atomically  # noqa: E402
from edge.posture import PostureConfig, PostureError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="a bundle directory (with bundle.json)")
    parser.add_argument("posture", type=Path, nargs="?", help="JSON written by streamed_cv.py --posture-out")
    parser.add_argument("--remove", action="store_true", help="take the posture rule out of the bundle")
    args = parser.parse_args()
    if (args.posture is None) != args.remove:
        parser.error("give a posture JSON file, or --remove")
    path = args.bundle / "bundle.json"
    try:
        before = load_bundle(args.bundle)
        data = dict(before.raw)
        if args.remove:
            data.pop("posture", None)
        else:
            fitted = json.loads(args.posture.read_text(encoding="utf-8"))
            data["posture"] = PostureConfig.from_dict(fitted.get("posture", {}), str(args.posture)).to_dict()
        text = json.dumps(data, indent=2) + "\n"
        write_text_atomically(path, text)
        after = load_bundle(args.bundle)
    except OSError as exc:
        print(f"bundle_posture: error: cannot read or write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"bundle_posture: error: {args.posture} is not JSON ({exc}); give the file --posture-out wrote",
              file=sys.stderr)
        return 2
    except (BundleError, PostureError) as exc:
        print(f"bundle_posture: error: {exc}", file=sys.stderr)
        return 2
    assert after.model_id == before.model_id  # only bundle.json changed
    print(f"{path}: posture rule " + (f"set: {json.dumps(after.posture.to_dict())}" if after.posture else "removed"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
