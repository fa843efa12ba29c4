"""`python -m core.export --run DIR --format onnx|torchscript [--out DIR]`: a run, ready for the line.

Writes into the output folder:
- `embedding.onnx` or `embedding.torchscript.pt`: the embedding network (what core.score embeds
  with), batch dimension dynamic;
- `reference_embeddings.npy`: the run's normal training embeddings, what core.score compares to
  (patch runs: `memory_bank.npy`, the patch memory bank, and the network outputs patch embeddings
  [N, h, w, D]; knn runs: the network is the pretrained backbone's pooled features);
- patch runs: `map_operator.npy`, the matrix M that turns a patch-distance grid g into the anomaly
  map M @ g @ M.T (upsampling and Gaussian smoothing), whose peak is the image score;
- `scoring.json`: threshold, k, the score's definition and the preprocessing, exactly as core.score
  does it (core.ingest.load_image);
- `score_exported.py`: a standalone scorer that needs only numpy, Pillow and onnxruntime (torch
  instead of onnxruntime for the TorchScript file).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.fsutil import write_json
from core.runs import Run, RunError, load_run, load_run_model, saved_threshold

FORMATS = ("onnx", "torchscript")
MODEL_FILES = {"onnx": "embedding.onnx", "torchscript": "embedding.torchscript.pt"}
REFERENCE_FILE = "reference_embeddings.npy"
BANK_FILE = "memory_bank.npy"
MAP_OPERATOR_FILE = "map_operator.npy"
SCORING_FILE = "scoring.json"
SCRIPT_FILE = "score_exported.py"
SCRIPT_TEMPLATE = Path(__file__).with_name("export_template") / SCRIPT_FILE
INPUT_NAME, OUTPUT_NAME, PATCH_OUTPUT_NAME = "image", "embedding", "patches"
SCORE_RULES = {
    "metric": "mean over the k nearest reference embeddings of the cosine distance 1 - cos, clipped at 0",
    "patch": "largest over the image's patches of the Euclidean distance to the nearest memory-bank row",
    "patch_map": "peak of the anomaly map M @ g @ M.T (M: map_operator.npy), where g is the grid of the "
    "image's patch distances to their nearest memory-bank rows",
}


class ExportError(RuntimeError):
    """One-line, user-facing reason an export could not be written."""


@dataclass
class ExportResult:
    out_dir: Path
    files: list[Path]
    exporter: str  # which torch exporter produced the model file


class _Embedder(torch.nn.Module):
    """Exposes what core.score compares as forward, so the exported graph is exactly what it runs:
    model.embed, or for a model that scores several views of an image (core.transform_classes) or
    shifted copies (core.score_shifts) their joint embedding (core.modelio.scoring_embedding)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        from core.modelio import score_offsets, score_views, scores_plain_embedding

        self.model = model
        self.views, self.offsets = score_views(model), score_offsets(model)
        self.plain = scores_plain_embedding(model)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return self.model.embed(image)
        from core.modelio import scoring_embedding

        return scoring_embedding(self.model.embed, image, self.views, self.offsets)


class _Features(torch.nn.Module):
    """knn and patch runs: the pretrained backbone at the method's input size; pooled features (knn)
    or the patch embedding [N, h, w, D] (patch: 3x3 average and resizing to the stride-8 grid inside
    the graph)."""

    def __init__(self, extractor: torch.nn.Module, image_size: int, blocks: tuple[int, ...] | None) -> None:
        super().__init__()
        self.extractor, self.image_size, self.blocks = extractor, int(image_size), blocks

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        from core.features import backbone_features

        return backbone_features(self.extractor, image, self.image_size, self.blocks)


def _network_and_reference(run: Run) -> tuple[torch.nn.Module, np.ndarray, str, dict[str, np.ndarray]]:
    """(network to export, the array it is compared to, the method, further arrays to save by file
    name) for any method's run."""
    from core.method_scoring import _extractor, knn_image_size, load_patchcore, run_method

    method = run_method(run)
    if method == "metric":
        return _Embedder(load_run_model(run.run_dir)), _reference_embeddings(run), method, {}
    if method == "knn":
        size = knn_image_size(run)
        extractor = _extractor(bool(run.summary.get("pretrained", True)), size)
        return _Features(extractor, size, None), _reference_embeddings(run), method, {}
    from core.features import patch_grid
    from core.patchcore import map_operator

    patchcore = load_patchcore(run)
    cfg = patchcore.config
    extras = {}
    if cfg.score_from_map:
        cells = patch_grid(cfg.image_size)[0]
        extras[MAP_OPERATOR_FILE] = map_operator(cells, cfg.image_size, cfg.sigma)
    return _Features(patchcore._net(), cfg.image_size, tuple(cfg.blocks)), patchcore.bank, method, extras


def preprocessing(run: Run) -> dict:
    """core.score's preprocessing, spelled out for a reimplementation without this project."""
    # The same fallbacks as core.score.score_files.
    size = int(run.summary.get("image_size") or run.config.get("image_size") or 28)
    channels = int(run.summary.get("channels") or 1)
    return {
        "image_size": size,
        "channels": channels,
        "layout": "NCHW float32",
        "scale": "8-bit pixels / 255 (16-bit / 65535), so values lie in [0, 1]",
        "mean": [0.0] * channels,
        "std": [1.0] * channels,
        "alpha": "transparency composited on black (RGBA, LA, P with transparency)",
        "gray_from_rgb": "ITU-R 601-2 luma: 0.299 R + 0.587 G + 0.114 B",
        "rgb_from_gray": "gray repeated in 3 channels",
        "resize": "stretched to image_size x image_size, each channel as a float ('F') image, "
        "Pillow BILINEAR (antialiased when shrinking), then clipped to [0, 1]",
        "orientation": "EXIF orientation applied; JPEG drafted to >= image_size before decoding",
        # mean/std above are what the script applies; a pretrained EfficientNet-Lite0 normalises for
        # ImageNet inside the exported graph (core.backbones.ImageNetInput), grayscale repeated there too
        "inside_graph": (
            "ImageNet normalisation (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225) and gray->RGB"
            if run.summary.get("arch") == "efficientnet-lite0"
            else "nothing"
        ),
    }


def _reference_embeddings(run: Run) -> np.ndarray:
    ref = run.scoring_emb[run.normal_train_mask].astype(np.float32)
    if len(ref) == 0:
        raise ExportError(f"{run.name}: embeddings.npz has no normal training embeddings to score against")
    return ref


def _export_onnx(embedder: torch.nn.Module, example: torch.Tensor, path: Path, patch: bool = False) -> str:
    """torch.onnx's default (dynamo) exporter; the TorchScript-based one if that fails."""
    batch = torch.export.Dim("batch", min=1)
    common = {"input_names": [INPUT_NAME], "output_names": [PATCH_OUTPUT_NAME if patch else OUTPUT_NAME]}
    try:
        with redirect_stdout(io.StringIO()):  # the dynamo exporter narrates every step on stdout
            torch.onnx.export(
                embedder,
                (example,),
                str(path),
                dynamic_shapes={"image": {0: batch}},
                external_data=False,  # one self-contained file; embedding nets are far below 2 GB
                **common,
            )
        return "torch.onnx.export (dynamo)"
    except Exception as e:  # noqa: BLE001 - any failure of the new exporter: fall back, say why
        print(
            f"notice: dynamo ONNX export failed ({e.__class__.__name__}); using dynamo=False", file=sys.stderr
        )
    torch.onnx.export(
        embedder, (example,), str(path), dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}}, **common
    )
    return "torch.onnx.export (dynamo=False)"


def _export_torchscript(
    embedder: torch.nn.Module, example: torch.Tensor, path: Path, patch: bool = False
) -> str:
    traced = torch.jit.trace(embedder, example)  # convolutional nets: no data-dependent control flow
    torch.jit.save(traced, str(path))
    return "torch.jit.trace"


def _scoring_config(
    run: Run, fmt: str, exporter: str, reference: np.ndarray, method: str, extras: dict[str, np.ndarray]
) -> dict:
    patch = method == "patch"
    rule = ("patch_map" if MAP_OPERATOR_FILE in extras else "patch") if patch else "metric"
    return {
        "run": run.name,
        "method": method,
        "format": fmt,
        "exporter": exporter,
        "model_file": MODEL_FILES[fmt],
        "input_name": INPUT_NAME,
        "output_name": PATCH_OUTPUT_NAME if patch else OUTPUT_NAME,
        "reference_file": BANK_FILE if patch else REFERENCE_FILE,
        "threshold": run.threshold,  # a saved threshold.json wins over summary.json, as in core.score
        "threshold_source": "threshold.json" if saved_threshold(run.run_dir) is not None else "summary.json",
        "k": min(int(run.summary.get("k", 5)), len(reference)),
        "score": SCORE_RULES[rule] + "; score > threshold means anomaly",
        "map_operator_file": MAP_OPERATOR_FILE if MAP_OPERATOR_FILE in extras else None,
        "preprocessing": preprocessing(run),
        "loss": run.summary.get("loss"),
        "alpha": run.summary.get("alpha"),
        "dim": int(reference.shape[1]),
    }


def export_run(run_dir: str | Path, fmt: str, out_dir: str | Path | None = None) -> ExportResult:
    """Export a completed run (see module doc). RunError/ExportError with one line when it cannot.

    Everything is written into a hidden folder inside `out_dir` first and then moved in file by file,
    so an interrupted export never leaves a half-written model beside a valid scoring.json."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}'; choose {' or '.join(FORMATS)}")
    if not Path(run_dir).is_dir():
        raise ExportError(f"run directory not found: {run_dir}")
    run = load_run(run_dir)
    network, reference, method, extras = _network_and_reference(run)
    prep = preprocessing(run)
    out = Path(out_dir) if out_dir else Path(run_dir) / f"export-{fmt}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    except OSError as e:
        raise ExportError(f"cannot write the export folder {out} ({e.strerror or e})") from None
    try:
        # Two images, so a batch size of 1 is not baked into the graph as a constant.
        example = torch.rand(2, prep["channels"], prep["image_size"], prep["image_size"])
        export = _export_onnx if fmt == "onnx" else _export_torchscript
        with torch.no_grad():
            exporter = export(network.eval(), example, staging / MODEL_FILES[fmt], method == "patch")
        reference_file = BANK_FILE if method == "patch" else REFERENCE_FILE
        np.save(staging / reference_file, reference.astype(np.float32), allow_pickle=False)
        for name, array in extras.items():
            np.save(staging / name, array, allow_pickle=False)
        write_json(staging / SCORING_FILE, _scoring_config(run, fmt, exporter, reference, method, extras))
        shutil.copyfile(SCRIPT_TEMPLATE, staging / SCRIPT_FILE)
        files = []
        for f in sorted(staging.iterdir()):  # the ONNX exporter may add an external-weights file
            os.replace(f, out / f.name)
            files.append(out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out, files, exporter)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.export", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="completed run directory")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", default=None, help="output folder (default: RUN/export-FORMAT)")
    args = p.parse_args(argv)
    try:
        result = export_run(args.run, args.format, args.out)
    except (RunError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {Path(args.run).name} to {result.out_dir} with {result.exporter}:")
    for f in result.files:
        print(f"  {f.name}")
    print(f"score images with: python {result.out_dir / SCRIPT_FILE} IMAGE...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
