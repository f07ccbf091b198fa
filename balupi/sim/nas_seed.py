"""A small, realistic sample tree for the simulated NAS (demo, benchmarks, tests).

Everything is generated deterministically (a fixed random seed), so two seeded trees are
byte-identical. Files are real of their kind: PNG images, WAV audio, a PDF, CSV, Markdown and
text, from a few bytes to a few hundred KiB, with non-ASCII names and names with spaces.
"""

from __future__ import annotations

import functools
import io
import math
import random
import struct
import wave
import zlib
from pathlib import Path

SEED = 20240712


def _png(width: int, height: int, rng: random.Random, *, noise: float) -> bytes:
    """An RGB PNG: a colour gradient, with `noise` (0..1) of random pixels mixed in."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type 0
        for x in range(width):
            base = (int(255 * x / max(1, width - 1)), int(255 * y / max(1, height - 1)),
                    int(128 + 127 * math.sin((x + y) / 17.0)))
            if noise and rng.random() < noise:
                base = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            row += bytes(base)
        rows.append(bytes(row))
    raw = b"".join(rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def _wav(seconds: float, rng: random.Random, *, tone_hz: float, rate_hz: int = 22050) -> bytes:
    """Mono 16-bit PCM: a soft tone with noise ("rain")."""
    frames = bytearray()
    for i in range(int(seconds * rate_hz)):
        sample = 0.25 * math.sin(2 * math.pi * tone_hz * i / rate_hz) + 0.15 * (rng.random() - 0.5)
        frames += struct.pack("<h", int(max(-1.0, min(1.0, sample)) * 32767))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(bytes(frames))
    return out.getvalue()


def _pdf(lines: list[str]) -> bytes:
    """A one-page PDF showing `lines` (Latin-1 text, Helvetica)."""
    text = "BT /F1 12 Tf 72 760 Td 16 TL " + " ".join(
        "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '"
        for line in lines) + " ET"
    stream = text.encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n"
            f"startxref\n{xref_at}\n%%EOF\n").encode()
    return bytes(out)


def _csv(rng: random.Random, rows: int) -> bytes:
    categories = ["Strom", "Internet", "Versicherung", "Fahrtkosten", "Arbeitsmittel", "Spenden"]
    lines = ["Datum;Kategorie;Beschreibung;Betrag (EUR)"]
    for i in range(rows):
        month, day = 1 + i % 12, 1 + (i * 7) % 28
        category = categories[i % len(categories)]
        lines.append(f"2023-{month:02d}-{day:02d};{category};Beleg Nr. {1000 + i};"
                     f"{rng.uniform(3, 400):.2f}".replace(".", ","))
    return ("\n".join(lines) + "\n").encode("utf-8")


_GREETINGS = """Liebe Grüße aus dem Süden!

Das Wetter ist großartig, die Straßen sind voller Menschen und abends gibt es Käsespätzle.
Wir schicken euch die Fotos vom Strand, sobald das NAS wieder wach ist.

Bis bald, eure Jürgen & Zoë
"""

_NOTES = """# Household NAS notes

- The NAS (BaluHost) sleeps at night; BaluPi keeps the hot files on its SSD.
- Photos of 2024 are synced every evening.
- Backup drive: rotate on the first Sunday of the month.

| Share     | Owner | Size   |
|-----------|-------|--------|
| Photos    | all   | ~80 GB |
| Documents | all   | ~4 GB  |
| Music     | all   | ~30 GB |
"""


def sample_files() -> dict[str, bytes]:
    """The sample tree as {relative path: content}."""
    return dict(_sample_files())


@functools.lru_cache(maxsize=1)
def _sample_files() -> dict[str, bytes]:
    rng = random.Random(SEED)
    files = {
        "Photos/2024/Summer Holiday/beach sunset.png": _png(320, 200, rng, noise=0.0),
        "Photos/2024/Summer Holiday/IMG_20240712_1830.png": _png(256, 256, rng, noise=0.9),
        "Photos/2024/Geburtstag Oma/Kuchen & Kerzen.png": _png(96, 96, rng, noise=0.3),
        "Photos/2023/Winter/Schnee im Garten.png": _png(160, 120, rng, noise=0.05),
        "Documents/Grüße.txt": _GREETINGS.encode("utf-8"),
        "Documents/Einkaufsliste.txt": "Milch\nBrot\nÄpfel\nKäse\nKaffee\n".encode("utf-8"),
        "Documents/household notes.md": _NOTES.encode("utf-8"),
        "Documents/Taxes 2023/Steuererklärung 2023.csv": _csv(rng, 400),
        "Documents/Taxes 2023/Rechnung 2023-03.pdf": _pdf([
            "Stadtwerke Musterstadt - Rechnung 2023-03",
            "Kundennummer 4711, Zeitraum 01.03.2023 - 31.03.2023",
            "Verbrauch: 212 kWh, Betrag: 78,41 EUR",
        ]),
        "Documents/empty.txt": b"",
        "Music/Ambient/Rain on the window.wav": _wav(4.0, rng, tone_hz=220.0),
        "Music/Ambient/Ocean – Waves.wav": _wav(1.5, rng, tone_hz=110.0),
        "Music/Playlists/Chill.m3u": (
            "#EXTM3U\n#EXTINF:4,Rain on the window\n../Ambient/Rain on the window.wav\n"
            "#EXTINF:1,Ocean – Waves\n../Ambient/Ocean – Waves.wav\n").encode("utf-8"),
    }
    return files


def seed_sample_tree(root: str | Path, *, home_users: tuple[str, ...] | list[str] = ()) -> list[Path]:
    """Write the sample tree under `root` (and a small one into ``home/<user>`` for each of
    `home_users`); return the paths written. Existing files of the same names are overwritten."""
    root = Path(root)
    written = []
    items = list(sample_files().items())
    for user in home_users:
        items += [
            (f"home/{user}/Documents/Notizen von {user}.txt",
             f"Private Notizen von {user}.\nNur für mich. Grüße!\n".encode("utf-8")),
            (f"home/{user}/Photos/profile picture.png", _png(48, 48, random.Random(user), noise=0.5)),
        ]
    for relative, content in items:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written
