"""The songbook: every public-domain work with lyrics in music21's bundled corpus.

`list_lyric_works()` finds the core files whose markup contains lyrics; `parse_work()` turns one into
a `SongbookWork`: metadata, lyrics joined from syllables per verse with word onsets (seconds), and
the notes needed to render it (MIDI pitch, onset, duration per part).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# Collection -> (genre, language). Collections not listed become genre "song", language "unknown".
COLLECTIONS: dict[str, tuple[str, str]] = {
    "bach": ("chorale", "German"),
    "trecento": ("trecento polyphony", "Italian"),
    "monteverdi": ("madrigal", "Italian"),
    "josquin": ("motet", "Latin"),
    "schumann_robert": ("lied", "German"),
    "schubert": ("lied", "German"),
    "haydn": ("song", "German"),
    "handel": ("oratorio", "English"),
    "beach": ("art song", "English"),
    "joplin": ("ragtime song", "English"),
    "leadSheet": ("popular song", "English"),
    "luca": ("chant", "Latin"),
    "corelli": ("sonata", "Italian"),
}
# Partition keys group small collections so each backfill unit is a meaningful size.
MAIN_PARTITIONS = ("bach", "trecento", "monteverdi")
OTHER_PARTITION = "other"

LICENSE = "Public domain (score); rendering CC0"
SOURCE = "music21 core corpus"

DEFAULT_QPM = 90.0  # tempo when a score has none (quarter notes per minute)


@dataclass
class Word:
    word: str
    onset_s: float  # seconds from the start of the piece
    verse: int  # 1-based verse number
    midi_pitch: int  # pitch of the note the word starts on


@dataclass
class NoteEvent:
    part: int  # 0-based part index
    pitch: int  # MIDI pitch
    onset_s: float
    duration_s: float


@dataclass
class SongbookWork:
    work_id: str  # e.g. "bach-bwv66.6"
    corpus_path: str  # path relative to music21's corpus root
    collection: str
    partition: str
    title: str
    artist: str
    genre: str
    language: str
    key: str
    mode: str
    meter: str
    parts: int
    qpm: float
    duration_s: float
    words: list[Word] = field(default_factory=list)
    notes: list[NoteEvent] = field(default_factory=list)

    @property
    def lyrics(self) -> str:
        """Verses joined by newlines; words within a verse by spaces."""
        verses: dict[int, list[str]] = {}
        for w in self.words:
            verses.setdefault(w.verse, []).append(w.word)
        return "\n".join(" ".join(verses[v]) for v in sorted(verses))


def corpus_root() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def _has_lyric_markup(path: Path) -> bool:
    if path.suffix == ".mxl":
        with zipfile.ZipFile(path) as z:
            return any(b"<lyric" in z.read(n) for n in z.namelist() if n.endswith(".xml") and "META" not in n)
    if path.suffix in (".xml", ".musicxml"):
        return b"<lyric" in path.read_bytes()
    if path.suffix == ".krn":
        data = path.read_bytes()
        return b"**text" in data or b"**silbe" in data
    return False


def list_lyric_works() -> list[str]:
    """Core corpus paths (relative to the corpus root, sorted) whose files carry lyric markup."""
    from music21 import corpus

    root = corpus_root()
    found = [p for p in corpus.getCorePaths() if _has_lyric_markup(Path(p))]
    return sorted(str(Path(p).relative_to(root)) for p in found)


def collection_of(rel_path: str) -> str:
    return rel_path.split("/")[0]


def partition_of(rel_path: str) -> str:
    c = collection_of(rel_path)
    return c if c in MAIN_PARTITIONS else OTHER_PARTITION


def work_id_of(rel_path: str) -> str:
    stem = rel_path.rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9.]+", "-", stem).strip("-").lower()


_GARBLE = re.compile(r"[^\w'’\-]", re.UNICODE)


def _clean_syllable(text: str) -> str:
    return _GARBLE.sub("", text or "").strip("-")


def _bach_titles() -> dict[str, str]:
    """BWV number -> chorale title from music21's ChoraleList (Riemenschneider catalogue)."""
    from music21.corpus.chorales import ChoraleList

    return {str(entry["bwv"]): entry["title"] for entry in ChoraleList().byBWV.values()}


_BACH_TITLES: dict[str, str] | None = None


def _title_for(rel_path: str, score, words: list[Word]) -> str:
    """ChoraleList title for Bach chorales; else the score's title; else the lyric incipit."""
    global _BACH_TITLES
    md = score.metadata
    title = (md.title or md.movementName or "") if md is not None else ""
    title = re.sub(r"\.(mxl|xml|krn|musicxml)$", "", title.strip())
    m = re.match(r"bach/bwv(\d+)(?:\.(\d+))?", rel_path)
    if m:
        if _BACH_TITLES is None:
            _BACH_TITLES = _bach_titles()
        bwv = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
        incipit = " ".join(w.word for w in words[:5] if w.verse == words[0].verse)
        title = f"{_BACH_TITLES.get(m.group(1)) or incipit} (BWV {bwv})"
    if not title or title.lower().startswith(("bwv", "pmfc", "madrigal.")):
        title = " ".join(w.word for w in words[:5])
    return title


def _seconds_mapper(score):
    """Quarter-length offset -> seconds, following the score's metronome marks (DEFAULT_QPM if none)."""
    bounds = []
    for start, end, mark in score.metronomeMarkBoundaries():
        qpm = mark.getQuarterBPM() if mark is not None and mark.number else None
        bounds.append((float(start), float(end), float(qpm or DEFAULT_QPM)))
    if not bounds:
        bounds = [(0.0, float("inf"), DEFAULT_QPM)]

    def to_seconds(offset: float) -> float:
        t = 0.0
        for start, end, qpm in bounds:
            if offset <= start:
                break
            span = min(offset, end) - start
            t += span * 60.0 / qpm
        return t

    return to_seconds, bounds[0][2]


def parse_work(rel_path: str) -> SongbookWork:
    """Parse one corpus file. Raises ValueError if it yields no words."""
    from music21 import converter

    score = converter.parse(corpus_root() / rel_path)
    flat_parts = list(score.parts) if score.parts else [score]
    to_seconds, qpm = _seconds_mapper(score)

    words: list[Word] = []
    notes: list[NoteEvent] = []
    lyric_part_found = False
    for part_index, part in enumerate(flat_parts):
        pending: dict[int, tuple[list[str], float, int]] = {}  # verse -> (syllables, onset, pitch)
        part_words: list[Word] = []
        for n in part.recurse().notes:
            offset = float(n.getOffsetInHierarchy(score))
            onset = to_seconds(offset)
            duration = to_seconds(offset + float(n.quarterLength)) - onset
            for p in n.pitches:
                notes.append(NoteEvent(part_index, int(p.midi), onset, max(duration, 0.05)))
            if lyric_part_found:
                continue  # words come from the first part that carries lyrics (usually the top voice)
            top_pitch = int(max(p.midi for p in n.pitches))
            for lyric in n.lyrics:
                text = _clean_syllable(lyric.text)
                if not text:
                    continue
                verse = int(lyric.number or 1)
                syllabic = lyric.syllabic or "single"
                if syllabic in ("single", "begin") or verse not in pending:
                    if verse in pending:  # an unterminated word: close it
                        syl, t0, pitch = pending.pop(verse)
                        part_words.append(Word("".join(syl), t0, verse, pitch))
                    pending[verse] = ([text], onset, top_pitch)
                else:
                    pending[verse][0].append(text)
                if syllabic in ("single", "end"):
                    syl, t0, pitch = pending.pop(verse)
                    part_words.append(Word("".join(syl), t0, verse, pitch))
        for verse, (syl, t0, pitch) in pending.items():
            part_words.append(Word("".join(syl), t0, verse, pitch))
        if part_words:
            lyric_part_found = True
            words = sorted(part_words, key=lambda w: (w.verse, w.onset_s))
    if not words:
        raise ValueError(f"{rel_path}: no lyrics found in any part")

    collection = collection_of(rel_path)
    genre, language = COLLECTIONS.get(collection, ("song", "unknown"))
    md = score.metadata
    composer = (md.composer if md is not None else None) or ""
    artist = {"bach": "J.S. Bach", "trecento": "Trecento (anonymous and attributed)"}.get(collection, composer)
    artist = artist or collection.replace("_", " ").title()
    try:
        key = score.analyze("key")
        key_name, mode = f"{key.tonic.name} {key.mode}", key.mode
    except Exception:  # atonal fragments or chant without a key
        key_name, mode = "unknown", "unknown"
    ts = score.recurse().getElementsByClass("TimeSignature").first()
    return SongbookWork(
        work_id=work_id_of(rel_path),
        corpus_path=rel_path,
        collection=collection,
        partition=partition_of(rel_path),
        title=_title_for(rel_path, score, words),
        artist=artist,
        genre=genre,
        language=language,
        key=key_name,
        mode=mode,
        meter=ts.ratioString if ts is not None else "unknown",
        parts=len(flat_parts),
        qpm=qpm,
        duration_s=to_seconds(float(score.highestTime)),
        words=words,
        notes=notes,
    )
