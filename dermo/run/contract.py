"""The contract that travels inside a saved classifier: what its input must be and what its outputs mean.

Stored as JSON next to Keras' own entries, readable without dermo and ignored by Keras:
    model.keras   an extra archive member `dermo.json`
    model.h5      a root attribute `dermo`
so `keras.models.load_model` still loads the file with no custom code, and dermo's Predictor (or anyone with
zipfile / h5py) reads the classes, input size and preprocessing that the model was trained with.

Keys (CONTRACT_VERSION 1): classes, task, image_size, preprocessing {hair, color, p, cache_size}, backbone,
weights, feature_layer, dermo_version; later additions keep these. Optional: temperature (written by
`dermo evaluate --calibrate` through update_contract; absent = 1, the model's own probabilities); meta (models
trained with --meta-columns: the MetaEncoding dict of dermo.data.metadata, fitted on the train split; the model
then has a second input "meta" of that encoding's width; absent = an image-only model).
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from dermo.errors import DermoError

CONTRACT_VERSION = 1
KERAS_MEMBER = "dermo.json"
H5_ATTRIBUTE = "dermo"


class ContractError(DermoError, ValueError):
    """A model file whose dermo contract cannot be read; one line naming the file."""


def embed_contract(path, contract: dict) -> None:
    """Add `contract` to a saved .keras or .h5 model file (in place; call before the atomic rename)."""
    path = Path(path)
    text = json.dumps({"contract_version": CONTRACT_VERSION, **contract}, sort_keys=True, default=str)
    if path.suffix == ".keras":
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(KERAS_MEMBER, text)
    elif path.suffix == ".h5":
        import h5py

        with h5py.File(path, "a") as f:
            f.attrs[H5_ATTRIBUTE] = text
    else:
        raise ValueError(f"{path}: a contract goes into a .keras or .h5 model file")


def read_contract(path) -> dict | None:
    """The contract stored in a .keras or .h5 model file; None for a file saved without one, or one that is
    not a readable archive at all (loading the model then reports that, in one line)."""
    path = Path(path)
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                if KERAS_MEMBER not in z.namelist():
                    return None
                return json.loads(z.read(KERAS_MEMBER))
        if path.suffix == ".h5":
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get(H5_ATTRIBUTE)
            return None if raw is None else json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (OSError, zipfile.BadZipFile):
        return None
    except (KeyError, ValueError) as e:
        raise ContractError(f"{path}: cannot read its dermo contract ({type(e).__name__})") from None
    return None


def update_contract(path, changes: dict) -> dict:
    """Merge `changes` into the contract of an existing .keras or .h5 model file (written atomically: the
    .keras archive is copied without its old `dermo.json`); returns the new contract."""
    path = Path(path)
    contract = {k: v for k, v in (read_contract(path) or {}).items() if k != "contract_version"}
    contract.update(changes)
    if path.suffix != ".keras":
        embed_contract(path, contract)                      # an h5 attribute is simply overwritten
        return read_contract(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if info.filename != KERAS_MEMBER:
                    dst.writestr(info, src.read(info.filename))
        embed_contract(tmp, contract)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return read_contract(path)
