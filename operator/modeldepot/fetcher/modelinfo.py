"""What the model is, from its files: format, precision or quantization, parameter count, classes.

Pure: `describe` takes the file list (path, size), the parsed `config.json` and the parsed
safetensors headers, and decides; `read_safetensors_header` and `read_config` are the only reads
(bounded, through `safefs`, never following a symlink), called by the fetcher on the verified
files before publishing. Nothing here is trusted for anything but display: the files come from
the Hub, which is untrusted input, so every value is checked for type and clipped.

- format: the weight format holding the most bytes (`safetensors`, `gguf`, `pytorch`, `onnx`,
  `tensorflow`, `flax`, `tflite`, `openvino`, `coreml`); `formats` lists every one present.
- precision: from the safetensors headers (the dtype holding the most elements), else
  `config.json`'s `torch_dtype`/`dtype`, else a GGUF file name (`F16`, `BF16`, `F32`).
- quantization: `config.json`'s `quantization_config` (`gptq-4bit`, `awq-4bit`, `bitsandbytes-4bit`,
  `fp8`, ...), else a GGUF file name's type (`Q4_K_M`, `IQ2_XS`, `Q8_0`).
- parameters: the elements of every tensor in the safetensors headers of the main weight set (the
  directory holding the most safetensors bytes); left out when the weights are quantized (packed
  tensors do not count parameters).
- classes: files and bytes that are weights, config, tokenizer or other.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from modeldepot import errors
from modeldepot.fetcher.safefs import Dir

__all__ = [
    "ModelInfo",
    "describe",
    "file_class",
    "human_count",
    "inspect",
    "read_config",
    "read_safetensors_header",
    "weight_format",
]

MAX_HEADER = 64 * 1024 * 1024
"""Largest safetensors header read (the format's own limit is 100 MB; real ones are < 10 MB)."""
MAX_CONFIG = 1024 * 1024
MAX_HEADERS = 256
"""Most safetensors files whose headers are read (a model split in more shards shows no count)."""

_WEIGHT_SUFFIXES = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".bin": "pytorch",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".ckpt": "pytorch",
    ".onnx": "onnx",
    ".onnx_data": "onnx",
    ".h5": "tensorflow",
    ".keras": "tensorflow",
    ".msgpack": "flax",
    ".tflite": "tflite",
    ".mlmodel": "coreml",
}
_TOKENIZER_NAMES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
}
_DTYPES = {
    "F64": "fp64",
    "F32": "fp32",
    "F16": "fp16",
    "BF16": "bf16",
    "F8_E4M3": "fp8",
    "F8_E5M2": "fp8",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
_CONFIG_DTYPES = {
    "float32": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "float64": "fp64",
    "int8": "int8",
    "float8_e4m3fn": "fp8",
}
_GGUF_TYPE = re.compile(r"(?i)(?:^|[-_.])((?:I?Q\d+(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?:[-_.]\d+-of-\d+)?\.gguf$")
_CLASSES = ("weights", "config", "tokenizer", "other")


@dataclass(frozen=True)
class ModelInfo:
    format: str | None = None
    formats: list[str] = field(default_factory=list)
    precision: str | None = None
    quantization: str | None = None
    parameters: int | None = None
    classes: dict[str, dict[str, int]] = field(default_factory=dict)
    """class -> {"files": n, "bytes": n}, only classes with files."""

    def to_dict(self) -> dict[str, Any]:
        """The camelCase dict of the termination message and `status.model` (no empty fields)."""
        out: dict[str, Any] = {}
        if self.format:
            out["format"] = self.format
        if self.formats:
            out["formats"] = list(self.formats)
        if self.precision:
            out["precision"] = self.precision
        if self.quantization:
            out["quantization"] = self.quantization
        if self.parameters is not None:
            out["parameters"] = self.parameters
        if self.classes:
            out["files"] = {k: dict(v) for k, v in self.classes.items()}
        if summary := self.summary():
            out["summary"] = summary
        return out

    def summary(self) -> str:
        """One line for humans: `safetensors, bf16, 8.0B params`, `gguf, Q4_K_M`."""
        parts = [p for p in (self.format, self.quantization or self.precision) if p]
        if self.parameters:
            parts.append(f"{human_count(self.parameters)} params")
        return ", ".join(parts)


def human_count(n: int) -> str:
    """1234 -> 1.2K, 22_700_000 -> 22.7M, 8_030_261_248 -> 8.0B."""
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def weight_format(path: str) -> str | None:
    """The weight format a file name says, or None when it is not a weight file."""
    p = PurePosixPath(path)
    name = p.name.lower()
    if "openvino" in path.lower() and name.endswith((".xml", ".bin")):
        return "openvino"
    if name.endswith(".bin") and not name.startswith(
        ("pytorch_model", "model", "consolidated", "adapter_model")
    ):
        return None  # training_args.bin, optimizer state and other pickles are not the weights
    return _WEIGHT_SUFFIXES.get(p.suffix.lower())


def file_class(path: str) -> str:
    """weights, config, tokenizer or other."""
    if weight_format(path) is not None:
        return "weights"
    name = PurePosixPath(path).name.lower()
    if name in _TOKENIZER_NAMES or name.startswith("tokenizer"):
        return "tokenizer"
    if name.endswith(("config.json", ".index.json", ".yaml", ".yml")) or name in {
        "params.json",
        "modules.json",
    }:
        return "config"
    return "other"


def _elements(shape: Any) -> int | None:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return None
    n = 1
    for d in shape:
        n *= d
    return n


def _precision_from_headers(headers: Iterable[Mapping[str, Any]]) -> tuple[str | None, int | None]:
    """(dominant dtype by elements, total elements) over the headers; (None, None) if none usable."""
    by_dtype: dict[str, int] = {}
    total = 0
    for header in headers:
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, Mapping):
                continue
            n = _elements(tensor.get("shape"))
            dtype = tensor.get("dtype")
            if n is None or not isinstance(dtype, str):
                continue
            by_dtype[dtype] = by_dtype.get(dtype, 0) + n
            total += n
    if not by_dtype:
        return None, None
    top = max(by_dtype.items(), key=lambda kv: kv[1])[0]
    return _DTYPES.get(top, top.lower()[:16]), total


def _quantization_from_config(config: Mapping[str, Any]) -> str | None:
    q = config.get("quantization_config")
    if not isinstance(q, Mapping):
        return None
    method = q.get("quant_method")
    method = method.lower()[:32] if isinstance(method, str) and method else None
    bits = q.get("bits")
    if isinstance(bits, bool) or not isinstance(bits, int):
        bits = None
    if q.get("load_in_4bit") is True:
        method, bits = method or "bitsandbytes", 4
    elif q.get("load_in_8bit") is True:
        method, bits = method or "bitsandbytes", 8
    if method is None:
        return None
    return f"{method}-{bits}bit" if bits else method


def _precision_from_config(config: Mapping[str, Any]) -> str | None:
    for key in ("torch_dtype", "dtype"):
        value = config.get(key)
        if isinstance(value, str) and value:
            return _CONFIG_DTYPES.get(value.lower())
    text = config.get("text_config")
    if isinstance(text, Mapping):
        return _precision_from_config({k: v for k, v in text.items() if k in ("torch_dtype", "dtype")})
    return None


def describe(
    files: Iterable[tuple[str, int]],
    *,
    config: Mapping[str, Any] | None = None,
    safetensors_headers: Mapping[str, Mapping[str, Any]] | None = None,
) -> ModelInfo:
    """What the model is (see the module docstring); `safetensors_headers`: path -> parsed header."""
    files = list(files)
    headers = dict(safetensors_headers or {})
    classes: dict[str, dict[str, int]] = {}
    by_format: dict[str, int] = {}
    st_dirs: dict[str, int] = {}
    gguf: list[tuple[int, str]] = []
    for path, size in files:
        cls = file_class(path)
        entry = classes.setdefault(cls, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += size
        fmt = weight_format(path)
        if fmt is not None:
            by_format[fmt] = by_format.get(fmt, 0) + size
        if fmt == "safetensors":
            parent = str(PurePosixPath(path).parent)
            st_dirs[parent] = st_dirs.get(parent, 0) + size
        if fmt == "gguf":
            gguf.append((size, PurePosixPath(path).name))
    ordered = sorted(by_format, key=lambda f: (-by_format[f], f))
    fmt = ordered[0] if ordered else None
    precision = quantization = None
    parameters = None
    if config is not None:
        quantization = _quantization_from_config(config)
    if fmt == "safetensors" and st_dirs:
        main = max(st_dirs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        main_headers = [
            h
            for p, h in headers.items()
            if str(PurePosixPath(p).parent) == main and weight_format(p) == "safetensors"
        ]
        precision, parameters = _precision_from_headers(main_headers)
        expected = sum(
            1 for p, _ in files if weight_format(p) == "safetensors" and str(PurePosixPath(p).parent) == main
        )
        if len(main_headers) != expected:
            parameters = None  # a shard whose header was not read: no count rather than a wrong one
    if fmt == "gguf" and gguf:
        match = _GGUF_TYPE.search(max(gguf)[1])
        if match:
            kind = match.group(1).upper()
            if kind in ("F16", "BF16", "F32"):
                precision = precision or {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}[kind]
            else:
                quantization = quantization or kind
    if precision is None and config is not None:
        precision = _precision_from_config(config)
    if quantization is not None:
        parameters = None  # packed quantized tensors do not count parameters
    ordered_classes = {c: classes[c] for c in _CLASSES if c in classes}
    quantization = quantization[:32] if quantization else None  # bounded: it goes into status
    return ModelInfo(fmt, ordered, precision, quantization, parameters, ordered_classes)


# -- the reads ------------------------------------------------------------------------------------


def read_safetensors_header(d: Dir, path: str) -> dict[str, Any] | None:
    """The JSON header of the safetensors file `d/path`, or None when it is not a sane one."""
    try:
        fd = d.open_fd(path, os.O_RDONLY)
    except (OSError, errors.PathConflictError, errors.InvalidSpecError):
        return None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 8, 0)
        if len(head) != 8:
            return None
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER or 8 + n > size:
            return None
        data = os.pread(fd, n, 8)
    finally:
        os.close(fd)
    try:
        header = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def read_config(d: Dir, path: str = "config.json") -> dict[str, Any] | None:
    """The parsed `config.json` (at most `MAX_CONFIG` bytes), or None."""
    try:
        fd = d.open_fd(path, os.O_RDONLY)
    except (OSError, errors.PathConflictError, errors.InvalidSpecError):
        return None
    try:
        if os.fstat(fd).st_size > MAX_CONFIG:
            return None
        data = os.pread(fd, MAX_CONFIG, 0)
    finally:
        os.close(fd)
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return config if isinstance(config, dict) else None


def inspect(d: Dir, files: Iterable[tuple[str, int]]) -> ModelInfo:
    """`describe` the verified files below `d`, reading config.json and the safetensors headers."""
    files = list(files)
    paths = {p for p, _ in files}
    config = read_config(d) if "config.json" in paths else None
    headers: dict[str, dict[str, Any]] = {}
    for path, _ in files:
        if weight_format(path) == "safetensors" and len(headers) < MAX_HEADERS:
            header = read_safetensors_header(d, path)
            if header is not None:
                headers[path] = header
    return describe(files, config=config, safetensors_headers=headers)
