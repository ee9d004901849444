"""Model files: what ``LSTMClassifier.save`` writes and ``load`` checks before it builds.

A model file is a ZIP archive of ``.npy`` members stored uncompressed (what
:func:`numpy.savez` writes), format version :data:`FORMAT_VERSION`:

=================================  ======================================================
member                             content
=================================  ======================================================
``meta``                           0-d unicode array: JSON (below)
``param:<name>``                   every network parameter (``network_.params``)
``optimizer:<slot>:<name>``        the optimizer's state (Adam ``m`` / ``v``, SGD
                                   ``velocity``), so training continues where it stopped
``rng:key``                        the training generator's MT19937 key (624 uint32)
``random_state:key``               ``random_state``'s key, when it is a RandomState
``classes_``                       the classifier's labels
=================================  ======================================================

The JSON holds ``format`` (``"fastlstm-model"``), ``format_version``,
``fastlstm_version`` (the writer), ``class``, ``params`` (every constructor parameter;
values that JSON would change are tagged with their type: dicts as key/value pairs, so
``class_weight={0: 1}`` keeps its int keys, NumPy scalars with their dtype, a
RandomState as its key, an augmenter of :mod:`fastlstm.augmentation` as its name and
parameters), ``network`` (the network's configuration) and ``fitted`` (the fitted
attributes of a fixed list, the optimizer's step count and the generator's position).

:func:`load` never unpickles, and it checks everything before it allocates: the archive's
members (uncompressed ``.npy`` with non-object dtypes, sizes that agree with the file);
the JSON's keys (unknown, missing and ill-typed entries are refused by name) and format
version (a newer one names both versions); the network's sizes against the stored arrays'
shapes (from their headers; a file that declares 10**7 layers but stores one is refused
before anything loops or allocates); every array's exact shape and dtype (no
broadcasting, no casting) and its finiteness; the constructor parameters through the
estimator's own validation. Anything that is not a fastlstm model file gets a
``ValueError`` saying so.

Pipelines that contain fastlstm estimators are stored with skops instead (no pickle
either): ``skops.io.load(path, trusted=fastlstm.persistence.SKOPS_TRUSTED_TYPES)``.
"""

import errno
import json
import math
import os
import tempfile
import tokenize
import zipfile

import numpy as np

from . import __version__, augmentation

FORMAT = "fastlstm-model"
#: Version of the file layout above; a file of a higher version is refused by name.
FORMAT_VERSION = 1

#: The fastlstm types (and NumPy's dtype, which the networks hold) that
#: ``skops.io.load`` must be told to trust to load a Pipeline holding fastlstm estimators;
#: scikit-learn's own types skops trusts by default.
SKOPS_TRUSTED_TYPES = [
    "fastlstm.estimators.LSTMClassifier",
    "fastlstm.estimators.LSTMRegressor",
    "fastlstm.estimators.SequenceScaler",
    "fastlstm.network.SequenceNetwork",
    "fastlstm.cells.BasicRNNCell",
    "fastlstm.cells.BasicLSTMCell",
    "fastlstm.cells.LSTMCell",
    "fastlstm.optimizers.Adam",
    "fastlstm.optimizers.SGD",
    "fastlstm.augmentation.RandomShift",
    "numpy.dtype",
]

_META_KEYS = {"format", "format_version", "fastlstm_version", "class", "params", "network",
              "fitted"}
_NETWORK_KEYS = {"n_features", "n_outputs", "hidden_size", "num_layers", "cell",
                 "bidirectional", "forget_bias", "cell_clip", "input_projection", "readout",
                 "dtype"}
#: Network settings that must equal the estimator parameter of the same name.
_SHARED_WITH_PARAMS = ("hidden_size", "num_layers", "cell", "bidirectional", "forget_bias",
                       "cell_clip", "input_projection", "readout", "dtype")
_OPTIMIZER_SLOTS = {"adam": ("m", "v"), "sgd": ("velocity",)}
_MT_KEY = (624,)


#: What parsing a damaged archive or .npy header raises, besides ValueError: zipfile's
#: BadZipFile and NotImplementedError (unsupported zip features), EOFError, the
#: tokenizer's error and SyntaxError from NumPy's header parser, OSError (bad offsets).
_PARSE_ERRORS = (ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, OSError,
                 SyntaxError, tokenize.TokenError, KeyError, IndexError, TypeError,
                 OverflowError, UnicodeDecodeError)


class ModelFileError(ValueError):
    """A file that is not a valid fastlstm model file (a ``ValueError``)."""


# ------------------------------------------------------------------ typed JSON values
def _encode(value, where, arrays):
    """``value`` as JSON data that :func:`_decode` turns back into the same type."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{where}={value!r} cannot be stored: a NumPy scalar of dtype "
                             f"{value.dtype}")
        return {"__numpy__": value.dtype.str, "value": value.item()}
    if isinstance(value, (int, float)) and type(value) in (int, float):
        return value
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, f"{where} key", arrays),
                              _encode(v, f"{where}[{k!r}]", arrays)]
                             for k, v in value.items()]}
    if isinstance(value, np.random.RandomState):
        return {"__random_state__": _store_random_state(value, where, arrays)}
    stored = augmentation.to_json(value) if callable(value) else None
    if stored is not None:
        return {"__augmenter__": stored["augmenter"],
                "params": _encode(stored["params"], where, arrays)}
    hint = ""
    if where == "augment":
        hint = (" (only the augmenters of fastlstm.augmentation are stored; augment matters "
                "only for further training: set_params(augment=None) before saving)")
    raise ValueError(f"{where}={value!r} cannot be stored in a fastlstm model file: "
                     f"{type(value).__name__} is not one of None, bool, int, float, str, a "
                     f"dict of those, a NumPy scalar or a RandomState{hint}")


def _store_random_state(rs, name, arrays):
    kind, key, pos, has_gauss, cached = rs.get_state()
    arrays[f"{name}:key"] = np.asarray(key, np.uint32)
    return {"pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _decode(data, where, archive):
    if data is None or isinstance(data, (bool, str, int, float)):
        return data
    if isinstance(data, dict):
        if set(data) == {"__numpy__", "value"}:
            dtype = _checked(lambda: np.dtype(data["__numpy__"]), where)
            if dtype.kind not in "biuf" or not isinstance(data["value"], (bool, int, float)):
                raise ModelFileError(f"{where}: a NumPy scalar of dtype {dtype} holding "
                                     f"{data['value']!r}")
            return _checked(lambda: dtype.type(data["value"]), where)
        if set(data) == {"__dict__"} and isinstance(data["__dict__"], list):
            out = {}
            for pair in data["__dict__"]:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ModelFileError(f"{where}: a dict entry must be a [key, value] pair")
                key = _decode(pair[0], f"{where} key", archive)
                if isinstance(key, dict):
                    raise ModelFileError(f"{where}: a dict cannot be a key")
                out[key] = _decode(pair[1], f"{where}[{key!r}]", archive)
            return out
        if set(data) == {"__random_state__"}:
            return _load_random_state(data["__random_state__"], where, archive)
        if set(data) == {"__augmenter__", "params"}:
            name = data["__augmenter__"]
            if name not in augmentation.AUGMENTERS:
                raise ModelFileError(f"{where}: unknown augmenter {name!r} (known: "
                                     f"{sorted(augmentation.AUGMENTERS)})")
            params = _decode(data["params"], where, archive)
            if not isinstance(params, dict):
                raise ModelFileError(f"{where}: the augmenter's parameters must be a dict")
            return _checked(lambda: augmentation.AUGMENTERS[name](**params), where)
    raise ModelFileError(f"{where}: {json.dumps(data)[:80]} is not a value this format stores")


def _load_random_state(state, name, archive):
    if not (isinstance(state, dict) and set(state) == {"pos", "has_gauss", "cached_gaussian"}
            and _is_int(state["pos"]) and 0 <= state["pos"] <= 624
            and state["has_gauss"] in (0, 1) and isinstance(state["cached_gaussian"], float)):
        raise ModelFileError(f"{name}: a generator state must hold pos (0-624), has_gauss (0 or "
                             f"1) and cached_gaussian (a float), got {state!r}")
    key = _array(archive, f"{name}:key", _MT_KEY, np.uint32)
    rs = np.random.RandomState()
    rs.set_state(("MT19937", key, state["pos"], state["has_gauss"],
                  state["cached_gaussian"]))
    return rs


def _checked(fn, where):
    try:
        return fn()
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelFileError(f"{where}: {exc}") from exc


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------------- writing
def save_model(estimator, file):
    """Write a fitted estimator to ``file`` (a path or a writable binary file object).

    Everything is encoded before the file is opened, so a parameter that cannot be stored
    raises ``ValueError`` and writes nothing; a path is written through a temporary file
    in the same folder and renamed, so a failed write leaves no partial file behind.
    """
    arrays = {}
    params = {k: _encode(v, k, arrays)
              for k, v in estimator.get_params(deep=False).items()}
    net = estimator.network_
    fitted = estimator._fitted_meta()
    opt = estimator._optimizer_
    kind = estimator.optimizer
    slots = {slot: getattr(opt, slot) for slot in _OPTIMIZER_SLOTS[kind]}
    fitted["optimizer"] = {"kind": kind, "t": int(getattr(opt, "t", 0))}
    for slot, values in slots.items():
        for name, arr in values.items():
            arrays[f"optimizer:{slot}:{name}"] = arr
    fitted["_rng_"] = _store_random_state(estimator._rng_, "rng", arrays)
    for name, arr in net.params.items():
        arrays[f"param:{name}"] = arr
    for name, arr in estimator._fitted_arrays().items():
        arrays[name] = arr
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "fastlstm_version": __version__, "class": type(estimator).__name__,
            "params": params, "network": dict(net.config), "fitted": fitted}
    arrays["meta"] = np.array(json.dumps(meta, default=_json_scalar))
    if hasattr(file, "write"):
        np.savez(file, **arrays)
        return
    path = os.fspath(file)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):      # else the error would name the temporary file
        raise FileNotFoundError(errno.ENOENT, "no such folder to save the model in", folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastlstm-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _json_scalar(value):
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


# ------------------------------------------------------------------------- reading
class _Archive:
    """The ``.npy`` members of a model file, their headers read and checked, the data
    read on demand (at most the member's own size, which the file holds)."""

    def __init__(self, file, label):
        self.label = label
        try:
            self.zip = zipfile.ZipFile(file)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise                  # as open() and np.load say it: not a matter of content
        except _PARSE_ERRORS as exc:
            raise ModelFileError(f"{label} is not a fastlstm model file (not the ZIP archive "
                                 f"that save writes: {exc})") from exc
        self.headers = {}
        self.used = set()          # the members read so far: load refuses any left over
        try:
            for info in self.zip.infolist():
                self._read_header(info)
        except BaseException:
            self.zip.close()
            raise

    def _read_header(self, info):
        name = info.filename
        if not name.endswith(".npy") or info.is_dir():
            raise ModelFileError(f"{self.label}: member {name!r} is not a .npy array; not a "
                                 f"fastlstm model file")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ModelFileError(f"{self.label}: member {name!r} is compressed; fastlstm model "
                                 f"files store their arrays uncompressed")
        try:
            with self.zip.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f".npy format version {version}")
                offset = fh.tell()
        except _PARSE_ERRORS as exc:
            raise ModelFileError(f"{self.label}: member {name!r} is not a readable .npy array "
                                 f"({exc})") from exc
        if dtype.hasobject:
            raise ModelFileError(f"{self.label}: member {name!r} holds Python objects; fastlstm "
                                 f"never unpickles")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise ModelFileError(f"{self.label}: member {name!r} declares shape {shape} "
                                 f"({nbytes} bytes) but holds {info.file_size - offset} bytes")
        self.headers[name[:-4]] = (shape, dtype, fortran)

    def read(self, name):
        try:
            with self.zip.open(name + ".npy") as fh:
                arr = np.lib.format.read_array(fh, allow_pickle=False)
        except _PARSE_ERRORS as exc:
            raise ModelFileError(f"{self.label}: member {name!r} cannot be read ({exc})") from exc
        return np.require(arr, requirements="C")

    def close(self):
        self.zip.close()


def _array(archive, name, shape, dtype, finite=False):
    """Member ``name`` of ``archive``, of exactly ``shape`` and ``dtype``."""
    if name not in archive.headers:
        raise ModelFileError(f"{archive.label}: the array {name!r} is missing")
    got_shape, got_dtype, _ = archive.headers[name]
    if got_shape != tuple(shape) or got_dtype != np.dtype(dtype):
        raise ModelFileError(f"{archive.label}: the array {name!r} must have shape "
                             f"{tuple(shape)} and dtype {np.dtype(dtype)}, got {got_shape} "
                             f"{got_dtype}")
    archive.used.add(name)
    arr = archive.read(name)
    if finite and not np.isfinite(arr).all():
        raise ModelFileError(f"{archive.label}: the array {name!r} contains NaN or infinity")
    return arr


def load_model(cls, file):
    """Read a file written by :func:`save_model` into a new ``cls``, checking it first.

    Parameters
    ----------
    cls : LSTMClassifier or LSTMRegressor
    file : path or seekable binary file object

    Raises
    ------
    ValueError
        When ``file`` is not a valid fastlstm model file of ``cls``, naming what is wrong.
    """
    label = repr(os.fspath(file)) if not hasattr(file, "read") else "the file object"
    archive = _Archive(file, label)
    try:
        try:
            est = _build(cls, archive)
        except RecursionError as exc:
            raise ModelFileError(f"{label}: values nested too deeply") from exc
        unused = set(archive.headers) - archive.used
        if unused:
            raise ModelFileError(f"{label}: unknown arrays {sorted(unused)}")
        return est
    finally:
        archive.close()


def _meta(archive):
    label = archive.label
    if "meta" not in archive.headers:
        raise ModelFileError(f"{label} is not a fastlstm model file (no 'meta' entry)")
    shape, dtype, _ = archive.headers["meta"]
    if shape != () or dtype.kind != "U":
        raise ModelFileError(f"{label}: 'meta' must be a 0-d string array, got {shape} {dtype}")
    archive.used.add("meta")
    try:
        meta = json.loads(archive.read("meta").item())
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{label}: 'meta' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{label} is not a fastlstm model file (its 'meta' does not name "
                             f"the format {FORMAT!r}; files written before fastlstm 0.2 carry no "
                             f"format version: load them with that version and save again)")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise ModelFileError(f"{label}: format_version must be a positive integer, got "
                             f"{version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{label} is in model-file format version {version}, written by "
                             f"fastlstm {meta.get('fastlstm_version')!s}; this fastlstm "
                             f"({__version__}) reads format version {FORMAT_VERSION} and "
                             f"older: upgrade fastlstm")
    _exact_keys(meta, _META_KEYS, f"{label}: meta")
    for key in ("params", "network", "fitted"):
        if not isinstance(meta[key], dict):
            raise ModelFileError(f"{label}: meta[{key!r}] must be a JSON object")
    return meta


def _exact_keys(mapping, expected, where, optional=()):
    unknown = set(mapping) - set(expected) - set(optional)
    missing = set(expected) - set(mapping)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown entries {sorted(unknown)}")
        if missing:
            parts.append(f"missing entries {sorted(missing)}")
        raise ModelFileError(f"{where}: {' and '.join(parts)}")


def _network_config(archive, cfg):
    """The network's configuration, its sizes checked against the stored arrays' shapes
    (read from their headers) before anything is built."""
    from .network import CELL_KINDS, READOUTS, param_shapes

    label = archive.label
    _exact_keys(cfg, _NETWORK_KEYS, f"{label}: network")
    for key in ("n_features", "n_outputs", "hidden_size", "num_layers"):
        if not _is_int(cfg[key]) or cfg[key] < 1:
            raise ModelFileError(f"{label}: network {key} must be a positive integer, got "
                                 f"{cfg[key]!r}")
    ip = cfg["input_projection"]
    if ip is not None and (not _is_int(ip) or ip < 1):
        raise ModelFileError(f"{label}: network input_projection must be None or a positive "
                             f"integer, got {ip!r}")
    checks = {"cell": cfg["cell"] in CELL_KINDS, "readout": cfg["readout"] in READOUTS,
              "dtype": cfg["dtype"] in ("float32", "float64"),
              "bidirectional": isinstance(cfg["bidirectional"], bool),
              "forget_bias": _is_real(cfg["forget_bias"])
              and math.isfinite(cfg["forget_bias"]),
              "cell_clip": cfg["cell_clip"] is None or (
                  _is_real(cfg["cell_clip"]) and 0 < cfg["cell_clip"] < math.inf)}
    for key, ok in checks.items():
        if not ok:
            raise ModelFileError(f"{label}: network {key}={cfg[key]!r} is not valid")
    # The structure the arrays hold: layers, directions, projection. Compared with the
    # declared one before param_shapes loops over the declared layers.
    stored = {n[len("param:"):] for n in archive.headers if n.startswith("param:")}
    layers = {n.split("/")[0] for n in stored if n.startswith("layer")}
    directions = {n.split("/")[1] for n in stored if n.startswith("layer") and "/" in n}
    if len(layers) != cfg["num_layers"]:
        raise ModelFileError(f"{label}: network num_layers={cfg['num_layers']} but the file "
                             f"stores the parameters of {len(layers)} layer(s)")
    if len(directions) != (2 if cfg["bidirectional"] else 1):
        raise ModelFileError(f"{label}: network bidirectional={cfg['bidirectional']} but the "
                             f"file stores directions {sorted(directions)}")
    expected = param_shapes(**cfg)
    if set(expected) != stored:
        raise ModelFileError(f"{label}: the network's parameters do not match its "
                             f"configuration: missing {sorted(set(expected) - stored)}, unknown "
                             f"{sorted(stored - set(expected))}")
    for name, shape in expected.items():
        got_shape, got_dtype, _ = archive.headers[f"param:{name}"]
        if got_shape != shape or got_dtype != np.dtype(cfg["dtype"]):
            raise ModelFileError(f"{label}: parameter {name!r} must have shape {shape} and "
                                 f"dtype {cfg['dtype']} for the declared network, got "
                                 f"{got_shape} {got_dtype}")
    return expected


def _build(cls, archive):
    from .network import SequenceNetwork
    from .optimizers import OPTIMIZERS

    label = archive.label
    meta = _meta(archive)
    if meta["class"] != cls.__name__:
        raise ModelFileError(f"{label} holds a {meta['class']}, not a {cls.__name__}")
    names = set(cls().get_params(deep=False))
    # parameters added after format version 1 was fixed: files from before lack them
    later = {"compute_dtype"}
    _exact_keys(meta["params"], names - later, f"{label}: params", optional=later)
    params = {k: _decode(v, k, archive) for k, v in meta["params"].items()}
    est = cls(**params)
    try:
        est._validate_params()
    except ValueError as exc:
        raise ModelFileError(f"{label}: {exc}") from exc

    cfg = meta["network"]
    shapes = _network_config(archive, cfg)
    for key in _SHARED_WITH_PARAMS:
        if cfg[key] != params[key]:
            raise ModelFileError(f"{label}: network {key}={cfg[key]!r} disagrees with the "
                                 f"parameter {key}={params[key]!r}")
    dtype = np.dtype(cfg["dtype"])
    values = {name: _array(archive, f"param:{name}", shape, dtype, finite=True)
              for name, shape in shapes.items()}

    fitted = dict(meta["fitted"])
    opt_meta = fitted.pop("optimizer", None)
    rng_meta = fitted.pop("_rng_", None)
    if opt_meta is None or rng_meta is None:
        raise ModelFileError(f"{label}: fitted entries 'optimizer' and '_rng_' are required")
    if not (isinstance(opt_meta, dict) and set(opt_meta) == {"kind", "t"}
            and opt_meta["kind"] == est.optimizer and _is_int(opt_meta["t"])
            and opt_meta["t"] >= 0):
        raise ModelFileError(f"{label}: fitted optimizer must be {{'kind': {est.optimizer!r}, "
                             f"'t': a count}}, got {opt_meta!r}")
    optimizer = OPTIMIZERS[est.optimizer](learning_rate=est.learning_rate)
    if hasattr(optimizer, "t"):
        optimizer.t = opt_meta["t"]
    slot_names = {}
    for slot in _OPTIMIZER_SLOTS[est.optimizer]:
        prefix = f"optimizer:{slot}:"
        stored = [n[len(prefix):] for n in archive.headers if n.startswith(prefix)]
        if set(stored) - set(shapes):
            raise ModelFileError(f"{label}: optimizer state for unknown parameters "
                                 f"{sorted(set(stored) - set(shapes))}")
        slot_names[slot] = set(stored)
        getattr(optimizer, slot).update(
            {n: _array(archive, prefix + n, shapes[n], dtype, finite=True) for n in stored})
    if len({frozenset(names) for names in slot_names.values()}) > 1:
        raise ModelFileError(f"{label}: the optimizer's slots {sorted(slot_names)} must "
                             f"hold the same parameters")
    rng = _load_random_state(rng_meta, "rng", archive)

    attrs = _fitted_attributes(est, fitted, cfg, archive)
    net = SequenceNetwork(**cfg, rng=np.random.RandomState(0))
    net.set_params(values)
    # All checked: the fitted state, at once.
    est.network_ = net
    est._optimizer_ = optimizer
    est._rng_ = rng
    for key, value in attrs.items():
        setattr(est, key, value)
    return est


def _float_list(value):
    return isinstance(value, list) and all(_is_real(v) for v in value)


def _history(value, n_iter):
    """``history_``: the fixed columns, one number (NaN allowed) per epoch each."""
    from .estimators import _HISTORY_KEYS
    return (isinstance(value, dict) and set(value) == set(_HISTORY_KEYS)
            and all(isinstance(col, list) and len(col) == n_iter
                    and all(_is_real(x) for x in col) for col in value.values()))


def _fitted_attributes(est, fitted, cfg, archive):
    """The fitted attributes of a fixed list, each checked; anything else is refused."""
    from .backends import available_backends, _KNOWN

    label = archive.label
    is_count = _is_int
    checks = {
        "n_features_in_": lambda v: is_count(v) and v >= 1,
        "n_features_per_step_": lambda v: v == cfg["n_features"] and is_count(v),
        "_fit_kind_": lambda v: v in ("3d", "2d", "list"),
        "n_iter_": lambda v: is_count(v) and v >= 0,
        "loss_curve_": _float_list,
        "best_loss_": _is_real,
        "backend_": lambda v: isinstance(v, str) and v in _KNOWN,
        "history_": lambda v: _history(v, fitted.get("n_iter_")),
        "stopped_by_": lambda v: v in (None, "no change", "callback"),
    }
    optional = {"validation_loss_curve_": _float_list, "validation_scores_": _float_list,
                "best_validation_score_": _is_real}
    checks.update(est._stored_fitted_checks(cfg))
    _exact_keys(fitted, checks, f"{label}: fitted", optional=optional)
    checks.update(optional)
    for key, value in fitted.items():
        if not checks[key](value):
            raise ModelFileError(f"{label}: fitted {key}={value!r} is not valid for this "
                                 f"model")
    kind, n_in, per_step = (fitted["_fit_kind_"], fitted["n_features_in_"],
                            fitted["n_features_per_step_"])
    if (n_in != per_step) if kind != "2d" else (
            n_in != (est.n_steps or n_in) * per_step or (est.n_steps is None and per_step != 1)):
        raise ModelFileError(f"{label}: fitted n_features_in_={n_in} does not fit "
                             f"{per_step} features per step for input of kind {kind!r}")
    present = [key for key in optional if key in fitted]
    if present and len(present) != len(optional):
        raise ModelFileError(f"{label}: fitted {sorted(optional)} go together (early "
                             f"stopping), the file has only {present}")
    if len(fitted["loss_curve_"]) != fitted["n_iter_"]:
        raise ModelFileError(f"{label}: fitted loss_curve_ must hold one loss per epoch "
                             f"(n_iter_={fitted['n_iter_']}), it holds "
                             f"{len(fitted['loss_curve_'])}")
    attrs = dict(fitted)
    if attrs["backend_"] not in available_backends():
        attrs["backend_"] = est._check_backend()     # e.g. "cuda" saved, no GPU here
    attrs.update(est._restore_fitted_arrays(attrs, cfg, archive))
    return attrs
