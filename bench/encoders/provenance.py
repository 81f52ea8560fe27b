"""Which generator an encoder was trained for: a hash of the generator's weights, checked at load time.

``generator_hash`` is the SHA-256 of the generator's state dict (keys sorted, each tensor as float32
bytes with its shape), so it names the weights, not the file: the same network read from another format
or path hashes alike. ``bench train-encoder`` records it in the encoder file's metadata
(``generator_sha256``); ``bench run`` refuses an encoder whose recorded hash differs from its generator's
unless the ``--encoder`` value ends in ``#any-generator``. Files without a recorded hash (the world's
shipped encoders, the papers' released files) are accepted as they are.
"""

from __future__ import annotations

import hashlib

import torch

ANY_GENERATOR = "any-generator"


def generator_hash(generator: torch.nn.Module) -> str:
    """Hex SHA-256 of the generator's weights (cached on the object; the weights are frozen in a run)."""
    cached = getattr(generator, "_bench_weights_sha256", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for key, value in sorted(generator.state_dict().items()):
        t = value.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{key}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    digest = h.hexdigest()
    try:
        generator._bench_weights_sha256 = digest
    except AttributeError:  # a frozen or slotted object: recompute next time
        pass
    return digest


def split_encoder_value(value: str) -> tuple[str, bool]:
    """``PATH`` or ``PATH#any-generator`` -> (path, whether the generator check is waived)."""
    path, sep, flag = value.partition("#")
    if sep and flag != ANY_GENERATOR:
        raise ValueError(f"--encoder ...={value!r}: unknown suffix #{flag}; the only one is #{ANY_GENERATOR}")
    return path, bool(sep)


def check_trained_for(encoder: torch.nn.Module, generator: torch.nn.Module, path: str, method: str,
                      waive: bool = False) -> str:
    """Raise ValueError if ``encoder`` records another generator's hash (unless ``waive``); returns a note."""
    meta = getattr(encoder, "metadata", None) or {}
    recorded = meta.get("generator_sha256")
    if not recorded:
        return f"{getattr(encoder, 'source', path)}: no generator hash recorded (not checked)"
    actual = generator_hash(generator)
    if recorded == actual:
        return f"{getattr(encoder, 'source', path)}: trained for this generator ({actual[:12]})"
    what = meta.get("generator", "another generator")
    if waive:
        return f"{path}: trained for {what} ({recorded[:12]}), used with {actual[:12]} (#{ANY_GENERATOR})"
    raise ValueError(f"{path}: encoder for {method!r} was trained for {what} (weights {recorded[:12]}), not for this "
                     f"generator ({actual[:12]}); train one with bench train-encoder {method} --generator G --out "
                     f"FILE, or pass --encoder {method}={path}#{ANY_GENERATOR} to use it anyway")
