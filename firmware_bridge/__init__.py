"""The device end of the HAR pipeline: wire protocol, recordings, a virtual device, firmware.

Imports only the standard library, ``cobs`` and ``pyserial``.
"""
from firmware_bridge.protocol import (  # noqa: F401
    CsvLineDecoder,
    FrameDecoder,
    Hello,
    Log,
    Sample,
    encode_hello,
    encode_log,
    encode_sample,
)
