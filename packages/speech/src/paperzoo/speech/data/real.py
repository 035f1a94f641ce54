"""Real human speech on disk (Debian packages), for evaluation and smoke tests of models trained on synthesized
speech.

- KLettres (package `klettres-data`, KDE's alphabet tutor): one recording per letter and per syllable or short
  word, spoken by native speakers of 20+ languages. English (`en`): 26 letters and 19 syllables ("car", "dog",
  "sky", ...); British English (`en_GB`): 26 letters and 23 syllables. Labels come from each language's
  `sounds.xml` (`<sound name="CAR" file="en/syllab/car.ogg"/>`), lowercased; without a `sounds.xml`, from the file
  names. A letter's transcript is the letter itself ("a"), though the speaker says its name ("ay").
- The ALSA speaker-test voice prompts (`alsa-utils`): eight WAVs of one speaker saying the channel names
  ("front center", "rear left", ...), labels from the file names. `Noise.wav` is noise, not speech: it is a noise
  source for `espeak.add_noise`, not an utterance.
Missing data (the package not installed) is a `DataError` saying which package to install.
"""

import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.speech.data.utterance import Utterance

KLETTRES_ROOT = Path("/usr/share/klettres")
ALSA_ROOT = Path("/usr/share/sounds/alsa")
#: KLettres folder -> the `sounds.xml` element that lists it.
KLETTRES_KINDS = {"alpha": "alphabet", "syllab": "syllables"}
_AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".opus")


def _klettres_entries(root: Path, language: str, kind: str) -> list[tuple[str, Path]]:
    """(label, audio file) of one KLettres language and kind, from `sounds.xml`, else from the file names."""
    index = root / language / "sounds.xml"
    if index.is_file():
        try:
            tree = ElementTree.parse(index)
        except ElementTree.ParseError as error:
            raise DataError(f"KLettres index {index} is not valid XML: {error}") from error
        entries = []
        for section in tree.iter(KLETTRES_KINDS[kind]):
            for sound in section.iter("sound"):
                name, file = sound.get("name"), sound.get("file")
                if not name or not file:
                    raise DataError(f"KLettres index {index}: a <sound> lacks its name or file attribute")
                entries.append((name.lower(), root / file))
        return entries
    folder = root / language / kind
    if not folder.is_dir():
        return []
    return [(file.stem.lower(), file) for file in sorted(folder.iterdir()) if file.suffix in _AUDIO_SUFFIXES]


def klettres_utterances(
    language: str = "en",
    kinds: Sequence[str] = ("alpha", "syllab"),
    root: str | Path = KLETTRES_ROOT,
) -> list[Utterance]:
    """The KLettres recordings of `language` (a folder of `root`: "en", "en_GB", "fr", ...) as utterances.

    Ids are `klettres-<language>-<kind>-<file stem>`, the text the lowercased label. Entries of `sounds.xml`
    whose file the package does not ship are skipped with a warning (Debian's `id`, `nn` and a few syllables of
    `ml`, `tn`); a language with no recording left is a `DataError`.
    """
    root = Path(root)
    bad = [kind for kind in kinds if kind not in KLETTRES_KINDS]
    if bad or not kinds:
        raise ConfigError(f"KLettres kinds {list(kinds)} must be a non-empty subset of {list(KLETTRES_KINDS)}")
    if not (root / language).is_dir():
        known = sorted(p.name for p in root.iterdir() if (p / "sounds.xml").is_file()) if root.is_dir() else []
        raise DataError(
            f"KLettres language {language!r} is not in {root}"
            + (f" (found {known})" if known else " (apt-get install klettres-data)")
        )
    utterances, missing = [], []
    for kind in kinds:
        for label, audio in _klettres_entries(root, language, kind):
            if not audio.is_file():
                missing.append(audio)
                continue
            utterances.append(Utterance(f"klettres-{language}-{kind}-{audio.stem}", label, audio))
    if missing:
        warnings.warn(
            f"KLettres {language}: {len(missing)} recordings listed in sounds.xml are not installed "
            f"(first: {missing[0]}); skipped",
            stacklevel=2,
        )
    if not utterances:
        raise DataError(f"KLettres {language} {list(kinds)} has no installed recordings under {root / language}")
    return utterances


def klettres_words(language: str = "en", kinds: Sequence[str] = ("alpha", "syllab")) -> list[str]:
    """The distinct transcripts of `klettres_utterances(language, kinds)` in order: words to add to a training
    vocabulary (`text.default_vocabulary(extra_words=...)`) so the KLettres set can be scored."""
    return list(dict.fromkeys(u.text for u in klettres_utterances(language, kinds)))


def alsa_utterances(root: str | Path = ALSA_ROOT) -> list[Utterance]:
    """The ALSA voice prompts (`Front_Center.wav` -> "front center"), sorted by name; `Noise.wav` excluded."""
    root = Path(root)
    files = sorted(f for f in root.glob("*.wav") if f.stem.lower() != "noise") if root.is_dir() else []
    if not files:
        raise DataError(f"no ALSA voice prompts (*.wav) in {root} (apt-get install alsa-utils)")
    return [Utterance(f"alsa-{f.stem.lower()}", " ".join(f.stem.lower().replace("_", " ").split()), f) for f in files]
