"""Causal language models through transformers: loading from any reference, storing as artifacts.

A reference to an LM is one of

* a registry reference (``tiny-gpt2``, ``tiny-gpt2:3``) to a ``causal-lm`` artifact,
* a local Hugging Face folder (``config.json``, weights, tokenizer files), e.g. an
  exported ``causal-lm`` artifact or a downloaded GPT-2,
* ``hf:NAME`` for a hub model, where a network (or the hub cache) has it.

Loading goes through ``AutoModelForCausalLM`` / ``AutoTokenizer`` with
``trust_remote_code=False``; it checks that the folder has a tokenizer and that
the tokenizer's vocabulary fits the model's embedding, because a mismatch
silently produces garbage (ids past the embedding, or the wrong words).

A ``causal-lm`` artifact is the folder ``save_pretrained`` writes (so
``AutoModelForCausalLM.from_pretrained`` reads an exported copy), with mltk's
provenance added to the ``model.safetensors`` metadata and a card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import pickle
import tempfile
from pathlib import Path

import torch

from mltk.core.artifact import build_card, open_artifact, provenance
from mltk.core.errors import ArtifactError
from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors, safetensors_bytes, unsafe_pickle_error

KIND = "causal-lm"
WEIGHTS_FILE = "model.safetensors"
HUB_PREFIX = "hf:"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model")


@dataclasses.dataclass
class LoadedLM:
    model: torch.nn.Module  # a transformers PreTrainedModel for causal LM, in eval mode
    tokenizer: object  # the matching transformers tokenizer
    reference: str  # what lineage records: name:version, an absolute folder, or hf:NAME
    card: dict  # the artifact card ({} for a plain folder or a hub model)

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().num_embeddings


def quiet_transformers() -> None:
    """Keep transformers' download bars and advisory logging off stderr (mltk reports progress itself)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def looks_like_folder(ref: str) -> bool:
    return Path(ref).expanduser().is_dir() or "/" in ref or ref.startswith(".")


def load_causal_lm(ref: str, *, registry: Registry | None = None, device: torch.device | str = "cpu") -> LoadedLM:
    """The LM ``ref`` names (see the module docstring), on ``device``, in eval mode."""
    quiet_transformers()
    if ref.startswith(HUB_PREFIX):
        model, tokenizer = _from_pretrained(ref[len(HUB_PREFIX):], where=ref, local_only=False)
        loaded = LoadedLM(model, tokenizer, ref, {})
    else:
        if looks_like_folder(ref):
            folder = Path(ref).expanduser().resolve()
            if not folder.is_dir():
                raise ArtifactError(f"{ref}: no such LM folder", hint="give a causal-lm artifact (see `mltk ls`), "
                                                                      "a Hugging Face folder or hf:NAME")
            opened = open_artifact(str(folder), plain_folders=True)  # a plain Hugging Face folder has no card
        else:
            opened = open_artifact(ref, registry=registry, kinds=(KIND,),
                                   kind_hint="give a causal-lm artifact, e.g. one trained with `mltk train lm`")
        opened.files()  # every file checked before transformers reads the folder
        model, tokenizer = _from_pretrained(str(opened.path), where=opened.source, local_only=True)
        loaded = LoadedLM(model, tokenizer, opened.source, opened.card)
    check_vocabulary(loaded.model, loaded.tokenizer, loaded.reference)
    loaded.model.to(device).eval()
    return loaded


def _from_pretrained(name: str, *, where: str, local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if local_only:
        folder = Path(name)
        if not (folder / "config.json").is_file():
            raise ArtifactError(f"{where}: not a Hugging Face model folder (no config.json)",
                                hint="save the model with save_pretrained, or export a causal-lm artifact")
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise ArtifactError(f"{where}: the LM folder has no tokenizer (none of {', '.join(TOKENIZER_FILES)})",
                                hint="save the tokenizer beside the model (tokenizer.save_pretrained(folder)); "
                                     "for GPT-2 copy vocab.json and merges.txt into it")
    if local_only:
        _refuse_a_config_larger_than_its_weights(Path(name), where)
        tokenizer = load_tokenizer(name, where=where)
    else:
        try:
            with _no_stdout_chatter():
                tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{where}: cannot load its tokenizer ({_first_line(exc)})",
                                hint="hub models need a network or the hub cache; use a local folder") from None
    try:
        with _no_stdout_chatter():
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only, trust_remote_code=False)
    except pickle.UnpicklingError as exc:
        # A pytorch_model.bin whose pickle would run code: transformers reads it with
        # weights_only=True, which refuses it, but torch's message invites turning that off.
        raise unsafe_pickle_error(f"{where}: its weights", exc) from None
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as exc:
        raise ArtifactError(f"{where}: cannot load the causal LM ({_first_line(exc)})",
                            hint="check config.json and the weights file" if local_only
                            else "hub models need a network or the hub cache; use a local folder") from None
    return model, tokenizer


WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def _refuse_a_config_larger_than_its_weights(folder: Path, where: str) -> None:
    """ArtifactError when config.json asks for more parameters than the folder's weight files hold bytes.

    The model is first built on the ``meta`` device (no memory), so an edited
    ``n_embd=10**9`` is refused in seconds instead of allocating terabytes;
    fewer than one stored byte per parameter cannot fill the model at any
    precision transformers loads.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with _no_stdout_chatter():
            config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{where}: config.json does not describe a causal LM ({_first_line(exc)})",
                            hint="check config.json") from None
    parameters = sum(p.numel() for p in skeleton.parameters())
    stored = sum(f.stat().st_size for pattern in WEIGHT_FILE_PATTERNS for f in folder.glob(pattern) if f.is_file())
    if parameters > stored:
        raise ArtifactError(f"{where}: config.json asks for {parameters:,} parameters but the weight files hold "
                            f"{stored:,} bytes", hint="config.json was edited or belongs to another model")


def load_tokenizer(folder: str | Path, *, where: str | None = None):
    """The tokenizer in ``folder``: anything ``AutoTokenizer`` reads, or bare GPT-2 ``vocab.json`` + ``merges.txt``."""
    quiet_transformers()
    from transformers import AutoTokenizer, GPT2TokenizerFast

    folder = Path(folder)
    where = where or str(folder)
    if not folder.is_dir() or not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ArtifactError(f"{where}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)})",
                            hint="point at a folder holding tokenizer.json, or GPT-2's vocab.json + merges.txt")
    has_config = (folder / "tokenizer_config.json").is_file() or (folder / "config.json").is_file()
    try:
        with _no_stdout_chatter():
            if has_config or not (folder / "merges.txt").is_file():
                return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
            return GPT2TokenizerFast.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{where}: cannot load the tokenizer ({_first_line(exc)})",
                            hint="check the tokenizer files") from None


def check_vocabulary(model: torch.nn.Module, tokenizer, where: str) -> None:
    """A tokenizer whose ids run past the model's embedding (or far short of it) does not belong to it."""
    rows = model.get_input_embeddings().num_embeddings
    tokens = len(tokenizer)
    # Models pad their embedding to a round size (GPT-2: 50257 tokens; others pad to a multiple of 64 or
    # 128), so a tokenizer may be a little smaller than the embedding, never larger.
    if tokens > rows or tokens < rows - 1024:
        raise ArtifactError(f"{where}: the tokenizer has {tokens} tokens but the model's embedding has {rows} rows",
                            hint="the tokenizer files belong to another model; use the tokenizer the LM was "
                                 "trained with")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


@contextlib.contextmanager
def _no_stdout_chatter():
    """transformers prints some notices with print(); stdout carries data only."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# ---------------------------------------------------------------- writing


def causal_lm_files(model: torch.nn.Module, tokenizer, *, provenance: dict[str, str]) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes for ``model`` and ``tokenizer``, with ``provenance``
    added to the weights' safetensors metadata."""
    quiet_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        with _no_stdout_chatter():
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        files = {}
        for path in sorted(Path(tmp).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                files[path.name] = path.read_bytes()
        if WEIGHTS_FILE not in files:
            raise ArtifactError(f"save_pretrained wrote no {WEIGHTS_FILE} (files: {', '.join(files)})",
                                hint="the model may be too large for one shard; this is not supported yet")
        tensors, metadata = load_safetensors(Path(tmp) / WEIGHTS_FILE)
    files[WEIGHTS_FILE] = safetensors_bytes(tensors, {**metadata, "format": "pt", **provenance})
    return files


def causal_lm_artifact(model: torch.nn.Module, tokenizer, *, engine: str, config: dict, config_sha256: str,
                       metrics: dict, primary_metric: str, higher_is_better: bool, parent: str, relation: str,
                       extra: dict | None = None) -> tuple[dict, dict]:
    """(files, card) of a ``causal-lm`` artifact for :meth:`Registry.save`."""
    files = causal_lm_files(model, tokenizer, provenance=provenance(
        engine=engine, parent=parent, relation=relation, config_sha256=config_sha256))
    arch = {"arch": model.config.model_type, "library": "transformers",
            "transformers_config": json.loads(model.config.to_json_string())}
    card = build_card(kind=KIND, engine=engine, arch=arch, parameters=sum(p.numel() for p in model.parameters()),
                      metrics=metrics, primary_metric=primary_metric, higher_is_better=higher_is_better,
                      parent=parent, relation=relation, config=config, config_sha256=config_sha256,
                      **(extra or {}))
    return files, card


def lm_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of an LM's architecture and weights, to tell whether an add-on still fits its LM."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def resolve_lm_reference(ref: str) -> str:
    """How lineage records an LM reference: a registry ref as given, a folder as an absolute path."""
    if ref.startswith(HUB_PREFIX) or not looks_like_folder(ref):
        return ref
    return str(Path(ref).expanduser().resolve())


__all__ = ["KIND", "LoadedLM", "causal_lm_artifact", "causal_lm_files", "check_vocabulary", "load_causal_lm",
           "load_tokenizer",
           "lm_fingerprint", "looks_like_folder", "quiet_transformers", "resolve_lm_reference"]
