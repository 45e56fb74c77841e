"""Training configuration: one dataclass with visible defaults, a JSON file, and `--set key=value` overrides.

    cfg = load_train_config("training/configs/default.json", ["epochs=5", "model=tcn_physics_h64"])

Every key is checked: an unknown key (in the file or in an override) is a ConfigError that names it and
lists the valid keys; a value of the wrong type names the key and the expected type.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from training.models import ModelConfigError, model_config

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "default.json"


class ConfigError(ValueError):
    """A training configuration file or override that cannot be used; the message says what to fix."""


@dataclass
class TrainConfig:
    # what to train
    model: str = "bilm"                    # a name from `har-train models`; bilm won the subject-wise CV
    model_options: dict = field(default_factory=dict)  # extra ModelConfig overrides, e.g. {"hidden": 96}
    pre_norm: bool = False                 # seed improvement 7: BatchNorm at the start of each TCN block
    drop_path: float = 0.0                 # seed improvement 8: stochastic depth (max rate)
    physics_lambda: float = 0.05           # seed improvement 9: weight of the physics loss
    label_smoothing: float = 0.0           # cross-entropy target smoothing
    # optimisation (seed 000: AdamW 5e-4 / 0.01, clip 1.0; improvement 5: warm-up then cosine)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_epochs: int = 2                 # linear warm-up, then cosine decay to 0, stepped per batch
    ema: bool = False                      # seed improvement 11: evaluate/save an EMA of the weights
    ema_decay: float = 0.999
    seed: int = 0
    rotate_degrees: float = 0.0            # augmentation: rotate each training window by up to this many degrees
    intensity_scale: float = 0.0           # augmentation: scale each window's movement (not gravity) by 1 +- this
    align_mount: bool = True               # rotate each wearer's windows so their gravity direction while walking
                                           # is the training wearers' mean (edge/mount.py; the device calibrates
                                           # online; docs/training.md "Mount alignment")
    mount_unaligned_fraction: float = 0.5  # share of training windows left unaligned, as the device sees them
                                           # before its calibration: keeps the model right while uncalibrated
    transitions: bool = False              # also learn HAPT's postural transitions (classes 7-12) as 6 more
                                           # outputs; the runtime names the posture after each one
    # data and split
    train_hop: int = 64                    # samples between training windows; validation and the device keep
                                           # the front-end's hop 64. Smaller = overlapping windows shifted in time
    data: str = ""                         # a data set (docs/datasets.md): HAPT, recordings folder or UCI-HAR;
                                           # "" = the HAPT zip of the shared data ($HAR_SHARED_DATA, ../shared/data);
                                           # relative: to cwd, else to the repo root
    subjects: list = field(default_factory=list)  # restrict to these subjects ([] = all in the data)
    val_subjects: list = field(default_factory=list)  # held-out subjects; [] = fold `val_fold` of `folds`
    folds: int = 5                         # subject-wise folds (cv mode; and the default split of fit)
    val_fold: int = 0
    train_all: bool = False                # train on every subject, no validation: keep the last (or EMA) epoch
    select_epoch: str = "last"             # "last": keep the last epoch (honest: nothing chosen on the held-out
                                           # users); "best": the epoch of best held-out macro-F1 (optimistic)
    # machinery
    num_threads: int = 1                   # torch threads; 1 on the shared 2-core box (2 threads oversubscribe it)
    eval_batch_size: int = 512
    max_batches_per_epoch: int = 0         # 0 = all; >0 caps batches per epoch (quick runs, timing)
    progress: bool = True                  # tqdm progress bar
    # own data, fine-tuning and device (docs/datasets.md; docs/training.md "Your own data, fine-tuning, ...")
    classes: list = field(default_factory=list)  # class names in output order; [] = the data set's own
    init: str = ""                         # fine-tune from this checkpoint ("default": the shipped model's)
    device: str = "auto"                   # auto (CUDA when present) | cpu | cuda
    amp: bool = True                       # bfloat16 autocast on CUDA (mixed precision); no effect on CPU

    def to_dict(self) -> dict:
        return asdict(self)

    def model_overrides(self) -> dict:
        """ModelConfig overrides: the named improvement options, then model_options."""
        return {"pre_norm": self.pre_norm, "drop_path": self.drop_path,
                "physics_lambda": self.physics_lambda, "label_smoothing": self.label_smoothing,
                **({"n_classes": 12} if self.transitions else {}), **self.model_options}

    def data_path(self) -> Path:
        """`data` resolved (training.data.resolve_data_path): "" = the shared HAPT zip."""
        from training.data import resolve_data_path

        return resolve_data_path(self.data)


def valid_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def _field_type(name: str) -> type:
    default = TrainConfig()
    return type(getattr(default, name))


def _coerce(key: str, value):
    """Check and convert one value to the type of the field's default (JSON types; ints widen to float)."""
    expected = _field_type(key)
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif expected is list:
        if isinstance(value, list):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if isinstance(value, str):  # "1,3,5"; classes: "WALKING,RUNNING"
            try:
                return [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                if key == "classes":
                    return [v.strip() for v in value.split(",") if v.strip()]
    elif expected is dict:
        if isinstance(value, dict):
            return value
    raise ConfigError(f"config key {key!r}: {value!r} is not a valid {expected.__name__} "
                      f"(default: {getattr(TrainConfig(), key)!r})")


def _check_keys(keys, where: str) -> None:
    unknown = [k for k in keys if k not in valid_keys()]
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in {where}; valid keys: {', '.join(valid_keys())}")


def parse_override(text: str) -> tuple[str, object]:
    """'key=value' -> (key, value). The value is read as JSON when it parses (numbers, true/false, lists,
    objects), else kept as a string: epochs=5, model=tcn_base, val_subjects=[1,3], subjects=1,3,5.
    'model_options.hidden=64' sets one entry of a dict option."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. --set epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key before '='")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def apply_overrides(config: TrainConfig, overrides, where: str = "--set") -> TrainConfig:
    """Apply a dict or a list of 'key=value' strings; returns a new TrainConfig."""
    values = config.to_dict()
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        if "." in key:  # dict entry, e.g. model_options.hidden=64
            head, sub = key.split(".", 1)
            _check_keys([head], where)
            if _field_type(head) is not dict:
                raise ConfigError(f"{key!r}: {head!r} is not a dict option; write {head}=VALUE")
            values[head] = {**values[head], sub: value}
            continue
        _check_keys([key], where)
        values[key] = _coerce(key, value)
    config = TrainConfig(**values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    problems = []
    for key in ("epochs", "batch_size", "eval_batch_size", "num_threads", "folds"):
        if getattr(config, key) < 1:
            problems.append(f"{key}={getattr(config, key)} must be >= 1")
    for key in ("warmup_epochs", "max_batches_per_epoch", "val_fold", "grad_clip", "weight_decay"):
        if getattr(config, key) < 0:
            problems.append(f"{key}={getattr(config, key)} must be >= 0")
    if not 1 <= config.train_hop <= 128:
        problems.append(f"train_hop={config.train_hop} must be in 1..128 (the window is 128 samples)")
    if not 0.0 <= config.rotate_degrees <= 180.0:
        problems.append(f"rotate_degrees={config.rotate_degrees} must be in 0..180")
    if not 0.0 <= config.intensity_scale < 1.0:
        problems.append(f"intensity_scale={config.intensity_scale} must be in [0, 1)")
    if not 0.0 <= config.mount_unaligned_fraction <= 1.0:
        problems.append(f"mount_unaligned_fraction={config.mount_unaligned_fraction} must be in [0, 1]")
    if config.lr <= 0:
        problems.append(f"lr={config.lr} must be > 0")
    if not 0.0 < config.ema_decay < 1.0:
        problems.append(f"ema_decay={config.ema_decay} must be in (0, 1)")
    if config.select_epoch not in ("last", "best"):
        problems.append(f"select_epoch={config.select_epoch!r} must be 'last' or 'best'")
    if config.val_fold >= config.folds:
        problems.append(f"val_fold={config.val_fold} must be < folds={config.folds}")
    if config.train_all and config.val_subjects:
        problems.append("train_all=true trains on every subject: leave val_subjects empty")
    for key in ("subjects", "val_subjects"):
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in getattr(config, key)):
            problems.append(f"{key}={getattr(config, key)} must be a list of integer subject ids")
    if config.classes and (not all(isinstance(c, str) and c for c in config.classes)
                           or len(set(config.classes)) != len(config.classes) or len(config.classes) < 2):
        problems.append(f"classes={config.classes} must be two or more distinct class names (or [] for the data's)")
    if config.device not in DEVICES:
        problems.append(f"device={config.device!r} must be one of {', '.join(DEVICES)}")
    try:  # the model's own checks (one home for each range: training.models.ModelConfig.validate)
        model_config(config.model, **config.model_overrides())
    except ModelConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError("invalid training configuration: " + "; ".join(problems))


def load_train_config(path: str | Path | None = None, overrides=()) -> TrainConfig:
    """Defaults <- JSON file (if given) <- overrides ('key=value' strings or a dict)."""
    config = TrainConfig()
    if path is not None:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist (see training/configs/default.json)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a JSON object of key: value pairs")
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys are notes
        config = apply_overrides(config, data, where=str(path))
    return apply_overrides(config, overrides if isinstance(overrides, dict) else list(overrides))
