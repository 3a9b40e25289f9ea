"""A spoken corpus made here: eSpeak NG through ctypes, from the ``espeakng-loader`` wheel.

The wheel bundles ``libespeak-ng.so`` and the ``espeak-ng-data`` voice directory, so no system
package is needed. The library is a process-wide singleton: it is initialised once, in
synchronous mode (``AUDIO_OUTPUT_SYNCHRONOUS``), and a synth callback collects the int16 chunks.
:func:`synthesize` speaks one text with a voice (``"en-us"``, ``"en+f3"``, ...), a rate (words
per minute) and a pitch (0-100); :func:`make_spoken_corpus` speaks words over voices, rates and
pitches, resamples to 16 kHz and caches the result to disk (an ``.npz`` keyed by its settings).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from invariance.sequence._checks import check_int

__all__ = [
    "ESPEAK_RATE",
    "DIGITS",
    "VOICES",
    "espeak_sample_rate",
    "synthesize",
    "make_spoken_corpus",
    "default_cache_dir",
]

#: sample rate eSpeak NG synthesises at (Hz)
ESPEAK_RATE = 22050
#: the ten spoken digits (the default vocabulary)
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: English voices x variants (a variant changes formants, pitch range and breathiness)
VOICES = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-us+m3",
    "en+m7",
    "en-us+f2",
    "en+f3",
    "en-gb-x-rp+f4",
    "en-us+f5",
    "en-029+m5",
)

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE values (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


def _lib() -> Any:
    """Load and initialise libespeak-ng once (raises RuntimeError when the wheel is missing)."""
    if "lib" in _STATE:
        return _STATE["lib"]
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise RuntimeError("the spoken corpus needs the espeakng-loader wheel") from e
    lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    data = str(espeakng_loader.get_data_path()).encode()
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
    if sr <= 0:
        raise RuntimeError(f"espeak_Initialize failed (returned {sr})")
    chunks: list[np.ndarray] = []

    def _cb(wav, n, _events):
        if n > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # continue synthesis

    cb = _CALLBACK(_cb)
    lib.espeak_SetSynthCallback(cb)
    _STATE.update(lib=lib, sr=sr, cb=cb, chunks=chunks)
    return lib


def espeak_sample_rate() -> int:
    """The sample rate libespeak-ng reports at initialisation (22050 Hz)."""
    _lib()
    return int(_STATE["sr"])


def synthesize(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50) -> Tensor:
    """Speak ``text`` with eSpeak NG; returns float32 audio in [-1, 1] at :data:`ESPEAK_RATE`.

    Args:
        text: what to say (non-empty).
        voice: an eSpeak voice name, optionally with a variant (``"en-us+f3"``).
        rate: speaking rate in words per minute, 80-450 (default: 160).
        pitch: base pitch, 0-100 (default: 50).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text must not be empty")
    if not isinstance(voice, str) or not voice:
        raise TypeError(f"voice must be a non-empty str, got {voice!r}")
    check_int("rate", rate, 80, 450)
    check_int("pitch", pitch, 0, 100)
    with _LOCK:
        lib = _lib()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"voice {voice!r} is not an eSpeak NG voice")
        lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
        chunks = _STATE["chunks"]
        chunks.clear()
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err}")
        wav = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        chunks.clear()
    return torch.from_numpy(wav.astype(np.float32) / 32768.0)


def default_cache_dir() -> Path:
    """``$INVARIANCE_CACHE_DIR/sequence-speech`` or ``~/.cache/invariance/sequence-speech``."""
    root = os.environ.get("INVARIANCE_CACHE_DIR") or str(Path.home() / ".cache" / "invariance")
    return Path(root) / "sequence-speech"


def _trim(x: Tensor, sr: int, thresh_db: float = -40.0, pad_s: float = 0.03) -> Tensor:
    """Cut leading/trailing frames more than ``thresh_db`` below the loudest 10 ms frame."""
    hop = max(1, sr // 100)
    n = x.shape[0] // hop
    if n == 0:
        return x
    e = x[: n * hop].reshape(n, hop).pow(2).mean(1)
    on = (10 * torch.log10(e.clamp_min(1e-12) / e.max())) > thresh_db
    idx = torch.nonzero(on).flatten()
    if len(idx) == 0:
        return x
    pad = int(pad_s * sr)
    a = max(0, int(idx[0]) * hop - pad)
    b = min(x.shape[0], (int(idx[-1]) + 1) * hop + pad)
    return x[a:b]


def make_spoken_corpus(
    words: tuple[str, ...] | list[str] = DIGITS,
    voices: tuple[str, ...] | list[str] = VOICES,
    rates: tuple[int, ...] | list[int] = (140, 180),
    pitches: tuple[int, ...] | list[int] = (35, 65),
    *,
    sample_rate: int = 16000,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Every word spoken by every voice at every rate and pitch, silence-trimmed, resampled.

    Returns a dict: ``audio`` (list of float32 1-D tensors), ``word`` (LongTensor of indices into
    ``words``), ``voice`` / ``rate`` / ``pitch`` (LongTensors of indices / values), ``words``,
    ``voices``, ``sample_rate``. The corpus is cached as an ``.npz`` under ``cache_dir``
    (:func:`default_cache_dir` when ``None``) keyed by the settings, so it is synthesised once.
    """
    for name, seq, typ in (
        ("words", words, str),
        ("voices", voices, str),
        ("rates", rates, int),
        ("pitches", pitches, int),
    ):
        if not isinstance(seq, (list, tuple)) or len(seq) == 0:
            raise ValueError(f"{name} must be a non-empty list")
        if not all(isinstance(v, typ) and not isinstance(v, bool) for v in seq):
            raise TypeError(f"{name} must hold {typ.__name__} values")
    check_int("sample_rate", sample_rate, 4000, 48000)
    for r in rates:
        check_int("rates", r, 80, 450)
    for p in pitches:
        check_int("pitches", p, 0, 100)
    settings = {
        "words": list(words),
        "voices": list(voices),
        "rates": list(rates),
        "pitches": list(pitches),
        "sr": sample_rate,
        "v": 1,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"corpus-{key}.npz"
    if path.exists():
        try:
            return _load(path, settings)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is rebuilt
    audio, meta = [], []
    for vi, voice in enumerate(voices):
        for rate in rates:
            for pitch in pitches:
                for wi, w in enumerate(words):
                    x = synthesize(w, voice, rate, pitch)
                    x = _trim(x, ESPEAK_RATE)
                    if sample_rate != ESPEAK_RATE:
                        x = AF.resample(x, ESPEAK_RATE, sample_rate)
                    audio.append(x.numpy().astype(np.float32))
                    meta.append((wi, vi, rate, pitch))
    m = np.asarray(meta, dtype=np.int64)
    lens = np.asarray([len(a) for a in audio], dtype=np.int64)
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, audio=np.concatenate(audio), lens=lens, meta=m, settings=json.dumps(settings))
    os.replace(tmp, path)
    return _load(path, settings)


def _load(path: Path, settings: dict) -> dict[str, Any]:
    z = np.load(path)
    if json.loads(str(z["settings"])) != settings:
        raise ValueError("cache settings differ")
    flat, lens, m = torch.from_numpy(z["audio"]), z["lens"], torch.from_numpy(z["meta"])
    audio = list(torch.split(flat, lens.tolist()))
    return {
        "audio": [a.clone() for a in audio],
        "word": m[:, 0].clone(),
        "voice": m[:, 1].clone(),
        "rate": m[:, 2].clone(),
        "pitch": m[:, 3].clone(),
        "words": tuple(settings["words"]),
        "voices": tuple(settings["voices"]),
        "sample_rate": settings["sr"],
    }
