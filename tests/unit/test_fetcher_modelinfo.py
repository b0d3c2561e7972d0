"""What the model is (fetcher/modelinfo.py): decided from file names, config.json and real
safetensors headers written to tmp dirs."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from localdev.hubemu import HubEmulator
from modeldepot.fetcher.job import TERMINATION_MESSAGE_BYTES
from modeldepot.fetcher.modelinfo import describe, file_class, inspect, read_safetensors_header, weight_format
from modeldepot.fetcher.run import FetchRequest, fetch
from modeldepot.fetcher.safefs import Dir
from modeldepot.settings import FetchSettings


def safetensors(tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None) -> bytes:
    """A real safetensors file: 8-byte little-endian header length, JSON header, zeroed data."""
    width = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "I32": 4, "U8": 1}
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = width[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


def write(root: Path, files: dict[str, bytes]) -> list[tuple[str, int]]:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return [(p, len(d)) for p, d in files.items()]


def test_a_sharded_bf16_safetensors_model(tmp_path: Path) -> None:
    files = write(
        tmp_path,
        {
            "model-00001-of-00002.safetensors": safetensors({"a": ("BF16", [64, 32]), "b": ("BF16", [32])}),
            "model-00002-of-00002.safetensors": safetensors({"c": ("BF16", [16, 16]), "norm": ("F32", [16])}),
            "model.safetensors.index.json": b"{}",
            "config.json": json.dumps({"torch_dtype": "float16"}).encode(),  # headers win
            "generation_config.json": b"{}",
            "tokenizer.json": b"{}",
            "tokenizer_config.json": b"{}",
            "README.md": b"# hi",
        },
    )
    with Dir.open_root(tmp_path) as d:
        info = inspect(d, files)
    assert info.format == "safetensors" and info.formats == ["safetensors"]
    assert info.precision == "bf16" and info.quantization is None
    assert info.parameters == 64 * 32 + 32 + 16 * 16 + 16
    assert info.classes["weights"]["files"] == 2
    assert info.classes["config"]["files"] == 3  # config, generation_config, the index
    assert info.classes["tokenizer"] == {"files": 2, "bytes": 4}
    assert info.classes["other"] == {"files": 1, "bytes": 4}
    assert list(info.to_dict()) == ["format", "formats", "precision", "parameters", "files", "summary"]
    assert info.summary() == "safetensors, bf16, 2.4K params"  # 2,352


def test_a_repo_with_several_formats_names_the_biggest() -> None:
    info = describe(
        [
            ("model.safetensors", 90_000_000),
            ("pytorch_model.bin", 90_000_100),
            ("onnx/model.onnx", 95_000_000),
            ("tf_model.h5", 91_000_000),
            ("openvino/openvino_model.bin", 45_000_000),
            ("openvino/openvino_model.xml", 100_000),
            ("training_args.bin", 5_000),
        ]
    )
    assert info.format == "onnx"
    assert info.formats == ["onnx", "tensorflow", "pytorch", "safetensors", "openvino"]
    assert info.parameters is None and info.precision is None  # no header was read
    assert file_class("training_args.bin") == "other"


@pytest.mark.parametrize(
    ("name", "precision", "quantization"),
    [
        ("llama-3-8b-instruct.Q4_K_M.gguf", None, "Q4_K_M"),
        ("Meta-Llama-3-8B-Instruct-IQ2_XS.gguf", None, "IQ2_XS"),
        ("mistral-7b-v0.1.Q8_0.gguf", None, "Q8_0"),
        ("phi-3-mini-f16.gguf", "fp16", None),
        ("model-BF16-00001-of-00003.gguf", "bf16", None),
        ("weights.gguf", None, None),
    ],
)
def test_gguf_file_names_say_the_quantization(
    name: str, precision: str | None, quantization: str | None
) -> None:
    info = describe([(name, 4_000_000_000), ("README.md", 10)])
    assert info.format == "gguf" and info.summary() == ", ".join(
        filter(None, ["gguf", quantization or precision])
    )
    assert (info.precision, info.quantization) == (precision, quantization)
    assert info.parameters is None


@pytest.mark.parametrize(
    ("qc", "expected"),
    [
        ({"quant_method": "gptq", "bits": 4}, "gptq-4bit"),
        ({"quant_method": "awq", "bits": 4}, "awq-4bit"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bitsandbytes-4bit"),
        ({"load_in_8bit": True}, "bitsandbytes-8bit"),
        ({"quant_method": "fp8"}, "fp8"),
        ({"bits": 4}, None),
        ("gptq", None),
    ],
)
def test_config_quantization(tmp_path: Path, qc: Any, expected: str | None) -> None:
    files = write(
        tmp_path,
        {
            "model.safetensors": safetensors({"qweight": ("I32", [8, 4]), "scales": ("F16", [4])}),
            "config.json": json.dumps({"quantization_config": qc, "torch_dtype": "float16"}).encode(),
        },
    )
    with Dir.open_root(tmp_path) as d:
        info = inspect(d, files)
    assert info.quantization == expected
    # packed quantized tensors count no parameters
    assert (info.parameters is None) == (expected is not None)


def test_precision_from_config_when_no_header(tmp_path: Path) -> None:
    files = write(tmp_path, {"pytorch_model.bin": b"pickle", "config.json": b'{"torch_dtype": "bfloat16"}'})
    with Dir.open_root(tmp_path) as d:
        info = inspect(d, files)
    assert (info.format, info.precision, info.parameters) == ("pytorch", "bf16", None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00",
        struct.pack("<Q", 1 << 40) + b"{}",  # a header length far beyond the file
        struct.pack("<Q", 5) + b"[1,2]",  # not an object
        struct.pack("<Q", 4) + b"\xff\xfe{}",  # not UTF-8 JSON
    ],
)
def test_hostile_headers_are_ignored(tmp_path: Path, data: bytes) -> None:
    files = write(tmp_path, {"model.safetensors": data})
    with Dir.open_root(tmp_path) as d:
        assert read_safetensors_header(d, "model.safetensors") is None
        info = inspect(d, files)
    assert info.format == "safetensors" and info.parameters is None and info.precision is None


def test_hostile_shapes_and_dtypes_do_not_count() -> None:
    header = {
        "a": {"dtype": "F16", "shape": [2, 3]},
        "b": {"dtype": "F16", "shape": [-1, 3]},
        "c": {"dtype": 7, "shape": [2]},
        "d": {"dtype": "F16", "shape": "big"},
        "e": {"dtype": "F16", "shape": [True, 2]},
        "f": "not a tensor",
    }
    info = describe([("model.safetensors", 100)], safetensors_headers={"model.safetensors": header})
    assert info.parameters == 6 and info.precision == "fp16"


def test_a_symlinked_weight_file_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(safetensors({"a": ("F32", [10])}))
    root = tmp_path / "root"
    root.mkdir()
    (root / "model.safetensors").symlink_to(outside)
    with Dir.open_root(root) as d:
        assert read_safetensors_header(d, "model.safetensors") is None


def test_a_shard_without_a_header_gives_no_count() -> None:
    header = {"a": {"dtype": "BF16", "shape": [4, 4]}}
    info = describe(
        [("model-00001-of-00002.safetensors", 100), ("model-00002-of-00002.safetensors", 100)],
        safetensors_headers={"model-00001-of-00002.safetensors": header},
    )
    assert info.precision == "bf16" and info.parameters is None


def test_weight_format_and_classes() -> None:
    assert weight_format("consolidated.00.pth") == "pytorch"
    assert weight_format("flax_model.msgpack") == "flax"
    assert weight_format("vocab.txt") is None
    assert file_class("tokenizer/vocab.txt") == "tokenizer"
    assert file_class("spiece.model") == "tokenizer"
    assert file_class("1_Pooling/config.json") == "config"
    assert file_class("modules.json") == "config"
    assert file_class("data/train.parquet") == "other"


def test_the_fetch_result_says_what_the_model_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    files = {
        "model.safetensors": safetensors({"embed": ("BF16", [1000, 64]), "head": ("BF16", [64, 10])}),
        "config.json": b'{"torch_dtype": "bfloat16"}',
        "tokenizer.json": b"{}",
    }
    settings = FetchSettings(termination_log=tmp_path / "termination-log")
    with HubEmulator() as hub:
        hub.add_repo_from_files("org/m", files)
        request = FetchRequest(
            repo_id="org/m", target=tmp_path / "root/m", endpoint=hub.url, root=tmp_path / "root"
        )
        first = fetch(request, settings=settings)
        again = fetch(request, settings=settings)  # already published: described all the same
    for result in (first, again):
        assert result.model["format"] == "safetensors" and result.model["precision"] == "bf16"
        assert result.model["parameters"] == 64_640
        assert result.model["files"]["tokenizer"] == {"files": 1, "bytes": 2}
        assert result.model["summary"] == "safetensors, bf16, 64.6K params"
    first.message = "x" * 5000
    first.path = "/data/" + "p" * 5000
    text = first.to_json()
    assert len(text.encode()) <= TERMINATION_MESSAGE_BYTES
    assert json.loads(text)["model"] == again.model  # never shortened
