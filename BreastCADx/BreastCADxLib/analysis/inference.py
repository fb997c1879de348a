"""How a loaded network is run: ONNX Runtime on the CPU (3-8x faster than PyTorch eager for these small
networks on 2 cores, `benchmarks/results/speed.md`), PyTorch on CUDA or when ONNX Runtime is missing.

The ONNX graph is made from the SHA256-verified PyTorch weights on first use and kept in a cache folder
(`BREASTCADX_CACHE`, else `$XDG_CACHE_HOME/breastcadx`, else `~/.cache/breastcadx`), named by the weights'
SHA256 and the torch / onnxruntime versions, so a changed model or library never reuses a stale graph. At
export both engines run the same input; the graph is used only if their outputs agree within `TOLERANCE`
(recorded beside it). `BREASTCADX_BACKEND=torch` forces PyTorch. Threads follow `torch.get_num_threads()`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from BreastCADxLib.analysis.cards import ModelCard

log = logging.getLogger(__name__)
TOLERANCE = 1e-3  # max |difference| of the outputs (logits / features) between the two engines
OPSET = 17


class Engine(Protocol):
    name: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class TorchEngine:
    name = "torch"

    def __init__(self, net: torch.nn.Module, device: torch.device) -> None:
        self.net, self.device = net.to(device).eval(), device

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device)).float().cpu()


class OnnxEngine:
    name = "onnxruntime"

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting threads between runs: they would steal the cores from radiomics and the rest
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input: x})[0])


def cache_dir() -> Path:
    if os.environ.get("BREASTCADX_CACHE"):
        return Path(os.environ["BREASTCADX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "breastcadx"


def _export(net: torch.nn.Module, example: torch.Tensor, path: Path) -> float:
    """Write the graph (batch axis dynamic) atomically; return the max |difference| to PyTorch on `example`."""
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.cpu().eval(), example, str(tmp), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=OPSET, dynamo=False)
        expected = net(example).float()
    got = OnnxEngine(tmp)(example)
    diff = float((got - expected).abs().max())
    os.replace(tmp, path)
    return diff


def _graph_paths(key: str, shape: tuple[int, ...]) -> tuple[Path, Path]:
    import onnxruntime as ort

    dims = "x".join(str(d) for d in shape)
    stem = f"{key}-{dims}-torch{torch.__version__.split('+')[0]}-ort{ort.__version__}"
    return cache_dir() / f"{stem}.onnx", cache_dir() / f"{stem}.json"


def _onnx_wanted(device: torch.device) -> bool:
    if device.type != "cpu" or os.environ.get("BREASTCADX_BACKEND", "auto") == "torch":
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cached_engine(key: str, shape: tuple[int, ...], device: torch.device) -> Engine | None:
    """The ONNX Runtime engine of an already exported, agreeing graph (no PyTorch network needed), or None."""
    if not _onnx_wanted(device):
        return None
    try:
        path, meta = _graph_paths(key, shape)
        if path.exists() and meta.exists() and json.loads(meta.read_text())["max_abs_diff"] <= TOLERANCE:
            return OnnxEngine(path)
    except Exception as e:  # unreadable cache: export again below
        log.warning("cached ONNX graph of %s not used (%s)", key, e)
    return None


def engine_for(net: torch.nn.Module, example: torch.Tensor, key: str, device: torch.device) -> Engine:
    """The fastest engine that reproduces `net`: ONNX Runtime for a CPU device when its graph agrees, else torch.
    `key` names the weights (e.g. their SHA256); `example` fixes the input's non-batch shape."""
    if not _onnx_wanted(device):
        return TorchEngine(net, device)
    try:
        path, meta = _graph_paths(key, tuple(example.shape[1:]))
        if not (path.exists() and meta.exists()):
            diff = _export(net, example, path)
            meta.write_text(json.dumps({"max_abs_diff": diff, "tolerance": TOLERANCE, "opset": OPSET}))
        if json.loads(meta.read_text())["max_abs_diff"] > TOLERANCE:
            log.warning("ONNX graph of %s disagrees with PyTorch; using PyTorch", key)
            return TorchEngine(net, device)
        return OnnxEngine(path)
    except Exception as e:  # a read-only home, a failed export: slower, never wrong
        log.warning("ONNX Runtime not used for %s (%s); using PyTorch", key, e)
        return TorchEngine(net, device)


def engine_of(key: str, shape: tuple[int, ...], device: torch.device, build: Callable[[], torch.nn.Module]
              ) -> tuple[Engine, torch.nn.Module | None]:
    """A model's engine: the cached agreeing graph of `key` when there is one (the network is never built), else
    `build()` run by `engine_for`. Returns the engine and the network when it was built."""
    engine = cached_engine(key, shape, device)
    if engine is not None:
        return engine, None
    net = build().eval()
    return engine_for(net, torch.zeros((1, *shape)), key, device), net


def card_engine(card: ModelCard, shape: tuple[int, ...], device: torch.device,
                architecture: Callable[[], torch.nn.Module]) -> tuple[Engine, torch.nn.Module | None]:
    """`engine_of` for a registry model: its weights' SHA256 is checked every time (a cached graph included); the
    network is `architecture()` with the card's weights, built only when needed."""
    from BreastCADxLib.analysis.registry import load_state_dict, verified_weights_path

    verified_weights_path(card)

    def build() -> torch.nn.Module:
        net = architecture()
        net.load_state_dict(load_state_dict(card))
        return net

    return engine_of(f"{card.id}-{card.sha256[:16]}", shape, device, build)
