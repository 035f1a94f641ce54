"""Kaldi-style data directories: `wav.scp`, `text` and an optional `segments`, as Kaldi, ESPnet and FunASR
recipes prepare LibriSpeech, AISHELL and most other corpora.

Format (https://kaldi-asr.org/doc/data_prep.html), one record per line, fields separated by whitespace:
- `wav.scp`: `<recording-id> <audio path>`. A relative path is resolved against the data directory (Kaldi resolves
  it against the recipe's working directory; ours is independent of where the command runs). Paths may contain
  spaces (the rest of the line is the path). Piped commands (`<id> flac -c -d -s x.flac |`) and archive offsets
  (`<id> feats.ark:12`) are not supported: a `DataError` names the file and line; convert such entries to audio
  files first (for example with sox or ffmpeg).
- `text`: `<utterance-id> <transcript>`. The transcript is the rest of the line with whitespace collapsed.
- `segments` (optional): `<utterance-id> <recording-id> <start s> <end s>`; an end of -1 means the end of the file.
  Without `segments`, every utterance id is a recording id of `wav.scp`.
Other files (`utt2spk`, `spk2utt`, `reco2dur`, ...) are ignored. Blank lines are skipped.

Empty transcripts (a `text` line with only an id): `empty_transcripts="error"` (the default) raises a `DataError`
naming the file and line; "skip" drops those utterances with one warning giving the count; "keep" returns them
with `text=""` (for callers that handle them, such as non-speech segments).

Every other problem (a missing file, a line with too few fields, a repeated id, a bad time, an utterance whose
recording is not in `wav.scp`, a missing audio file) is a `DataError` naming the file and the line number.
"""

import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.core.io import atomic_write_text
from paperzoo.speech.data.utterance import Utterance

EMPTY_TRANSCRIPTS = ("error", "skip", "keep")
_ARCHIVE_OFFSET = re.compile(r"\.(ark|scp):\d+$")


def _records(path: Path, fields: int, min_fields: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line of `path`: up to `fields` fields, the last one holding the
    rest of the line; fewer than `min_fields` (default `fields`) is a `DataError` naming the line."""
    if not path.is_file():
        raise DataError(f"Kaldi file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"Kaldi file {path} is not UTF-8 text: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=fields - 1)
        if len(parts) < (fields if min_fields is None else min_fields):
            raise DataError(f"{path} line {number}: expected {fields} fields, got {line.strip()!r}")
        yield number, parts


def _unique(path: Path, number: int, key: str, seen: dict[str, int]) -> None:
    if key in seen:
        raise DataError(f"{path} line {number}: id {key!r} repeats the id of line {seen[key]}")
    seen[key] = number


def read_wav_scp(path: str | Path, check_audio: bool = True) -> dict[str, Path]:
    """`wav.scp` as {recording id: audio path}; relative paths resolved against the file's directory."""
    path = Path(path)
    recordings: dict[str, Path] = {}
    seen: dict[str, int] = {}
    for number, (recording, location) in _records(path, 2):
        _unique(path, number, recording, seen)
        if location.endswith("|"):
            raise DataError(
                f"{path} line {number}: recording {recording!r} is a piped command ({location!r}), which is not "
                "supported; convert it to an audio file and list its path"
            )
        if location.startswith("-") or _ARCHIVE_OFFSET.search(location):
            raise DataError(
                f"{path} line {number}: recording {recording!r} is an archive offset or stream ({location!r}), "
                "which is not supported; list an audio file path"
            )
        audio = Path(location).expanduser()
        audio = audio if audio.is_absolute() else path.parent / audio
        if check_audio and not audio.is_file():
            raise DataError(f"{path} line {number}: audio file {audio} of recording {recording!r} does not exist")
        recordings[recording] = audio
    return recordings


def read_text(
    path: str | Path, empty_transcripts: Literal["error", "skip", "keep"] = "error"
) -> dict[str, tuple[str, int]]:
    """`text` as {utterance id: (transcript, line number)}; see the module docstring for `empty_transcripts`."""
    if empty_transcripts not in EMPTY_TRANSCRIPTS:
        raise ConfigError(f"empty_transcripts {empty_transcripts!r} must be one of {EMPTY_TRANSCRIPTS}")
    path = Path(path)
    transcripts: dict[str, tuple[str, int]] = {}
    seen: dict[str, int] = {}
    skipped = []
    for number, fields in _records(path, 2, min_fields=1):
        utterance = fields[0]
        _unique(path, number, utterance, seen)
        transcript = " ".join(fields[1].split()) if len(fields) > 1 else ""
        if not transcript:
            if empty_transcripts == "error":
                raise DataError(
                    f"{path} line {number}: utterance {utterance!r} has an empty transcript "
                    "(pass empty_transcripts='skip' to drop such utterances)"
                )
            if empty_transcripts == "skip":
                skipped.append(number)
                continue
        transcripts[utterance] = (transcript, number)
    if skipped:
        warnings.warn(
            f"{path}: skipped {len(skipped)} utterances with empty transcripts (lines {skipped[:10]}"
            f"{', ...' if len(skipped) > 10 else ''})",
            stacklevel=2,
        )
    return transcripts


def read_segments(path: str | Path) -> dict[str, tuple[str, float, float | None, int]]:
    """`segments` as {utterance id: (recording id, start s, end s or None for -1, line number)}."""
    path = Path(path)
    segments: dict[str, tuple[str, float, float | None, int]] = {}
    seen: dict[str, int] = {}
    for number, fields in _records(path, 4):
        utterance, recording, start_text, end_text = fields
        _unique(path, number, utterance, seen)
        try:
            start, end = float(start_text), float(end_text)
        except ValueError as error:
            raise DataError(
                f"{path} line {number}: start {start_text!r} and end {end_text!r} must be numbers of seconds"
            ) from error
        if end == -1:
            segments[utterance] = (recording, start, None, number)
            continue
        if not 0 <= start < end:
            raise DataError(f"{path} line {number}: segment [{start}, {end}] s must satisfy 0 <= start < end")
        segments[utterance] = (recording, start, end, number)
    return segments


def read_kaldi_dir(
    path: str | Path,
    empty_transcripts: Literal["error", "skip", "keep"] = "error",
    check_audio: bool = True,
) -> list[Utterance]:
    """The utterances of a Kaldi data directory, in the order of its `text` file.

    Args:
        path: the directory holding `wav.scp`, `text` and optionally `segments`.
        empty_transcripts: "error", "skip" or "keep" (module docstring).
        check_audio: check that every listed audio file exists (cheap; decoding errors surface on reading).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise DataError(f"Kaldi data directory {directory} does not exist")
    recordings = read_wav_scp(directory / "wav.scp", check_audio)
    transcripts = read_text(directory / "text", empty_transcripts)
    text_path, scp_path, segments_path = directory / "text", directory / "wav.scp", directory / "segments"
    utterances = []
    if segments_path.is_file():
        segments = read_segments(segments_path)
        for recording, _start, _end, number in segments.values():
            if recording not in recordings:
                raise DataError(f"{segments_path} line {number}: recording {recording!r} is not in {scp_path}")
        for utterance, (transcript, number) in transcripts.items():
            if utterance not in segments:
                raise DataError(f"{text_path} line {number}: utterance {utterance!r} is not in {segments_path}")
            recording, start, end, _ = segments[utterance]
            utterances.append(Utterance(utterance, transcript, recordings[recording], start, end))
    else:
        for utterance, (transcript, number) in transcripts.items():
            if utterance not in recordings:
                raise DataError(
                    f"{text_path} line {number}: utterance {utterance!r} is not a recording of {scp_path} "
                    "(and there is no segments file)"
                )
            utterances.append(Utterance(utterance, transcript, recordings[utterance]))
    return utterances


def _seconds(value: float) -> str:
    """Seconds to microsecond precision (far below one sample), without trailing zeros."""
    return format(value, ".6f").rstrip("0").rstrip(".") or "0"


def _check_id(kind: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise DataError(f"{kind} id {value!r} must be non-empty and contain no whitespace (Kaldi fields)")


def write_kaldi_dir(
    utterances: Iterable[Utterance], path: str | Path, audio_paths: Literal["auto", "relative", "absolute"] = "auto"
) -> Path:
    """Write `utterances` as a Kaldi data directory (`wav.scp`, `text`, and `segments` when any has bounds).

    Lines are sorted by id (Kaldi's `validate_data_dir.sh` requires it). `audio_paths`: "auto" lists audio inside
    `path` relative to it (the directory stays relocatable) and other audio by absolute path; "relative" lists
    every file relative to `path` (`../audio/x.wav`: for a corpus that moves as a whole); "absolute" never.
    With segments, each distinct audio file becomes one recording, named after the file (made unique), and
    whole-file utterances get `0 -1`. Each file is written atomically. Returns `path`.
    """
    if audio_paths not in ("auto", "relative", "absolute"):
        raise ConfigError(f"audio_paths {audio_paths!r} must be 'auto', 'relative' or 'absolute'")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    utterances = sorted(utterances, key=lambda u: u.id)
    seen: set[str] = set()
    for utterance in utterances:
        _check_id("utterance", utterance.id)
        if utterance.id in seen:
            raise DataError(f"utterance id {utterance.id!r} appears twice; Kaldi ids must be unique")
        seen.add(utterance.id)
        if "\n" in utterance.text or "\r" in utterance.text:
            raise DataError(f"the transcript of utterance {utterance.id!r} spans several lines")

    def location(audio: Path) -> str:
        audio = Path(audio).resolve()
        if audio_paths == "relative":
            return os.path.relpath(audio, directory.resolve())
        if audio_paths == "absolute":
            return str(audio)
        try:
            return str(audio.relative_to(directory.resolve()))
        except ValueError:
            return str(audio)

    text = "".join(f"{u.id} {' '.join(u.text.split())}".rstrip() + "\n" for u in utterances)
    segmented = any(u.start is not None or u.end is not None for u in utterances)
    if not segmented:
        scp = "".join(f"{u.id} {location(u.audio)}\n" for u in utterances)
    else:
        names: dict[Path, str] = {}
        for u in utterances:
            audio = Path(u.audio).resolve()
            if audio not in names:
                base = re.sub(r"\s+", "_", audio.stem) or "recording"
                name, n = base, 1
                while name in names.values():
                    n += 1
                    name = f"{base}-{n}"
                names[audio] = name
        scp = "".join(f"{name} {location(audio)}\n" for audio, name in sorted(names.items(), key=lambda kv: kv[1]))
        segments = "".join(
            f"{u.id} {names[Path(u.audio).resolve()]} {_seconds(u.start or 0.0)} "
            f"{-1 if u.end is None else _seconds(u.end)}\n"
            for u in utterances
        )
        atomic_write_text(directory / "segments", segments)
    if not segmented and (directory / "segments").exists():
        (directory / "segments").unlink()  # a stale segments file would override the plain listing
    atomic_write_text(directory / "wav.scp", scp)
    atomic_write_text(directory / "text", text)
    return directory
