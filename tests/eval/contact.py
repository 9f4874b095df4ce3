"""Contact sheets: a grid of face crops at evenly spaced times, each labelled with its time,
the phone spoken then and the mouth opening, above a strip plotting mouth opening against
speech energy (bilabials marked red, open vowels blue), drawn with Pillow."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tests.eval.phones import phone_at
from tests.eval.sync import BILABIALS, OPEN_VOWELS, Phone, mouth_opening

TILE_PX = 160
LABEL_PX = 30
COLUMNS = 6
PLOT_PX = 164
TITLE_PX = 24
TRACK_COLOURS = ((220, 120, 0), (0, 150, 80))
ENERGY_COLOUR = (150, 150, 150)


def face_crop(frame: np.ndarray, boxes: Sequence[np.ndarray]) -> Image.Image:
    """Square crop around the union of the face boxes (x0, y0, x1, y1), or the whole frame."""
    image = Image.fromarray(frame)
    if boxes:
        stacked = np.stack(boxes)
        x0, y0 = stacked[:, :2].min(0)
        x1, y1 = stacked[:, 2:].max(0)
        side = 1.3 * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        image = image.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    image.thumbnail((TILE_PX, TILE_PX))
    return image


def draw_sheet(path: Path, title: str, samples: dict[int, np.ndarray], landmarks: Sequence[np.ndarray],
               fps: float, phones: Sequence[Phone], energy_db: np.ndarray) -> None:
    """One PNG: the sample frames (cropped to the tracked faces) and the plot strip."""
    font = ImageFont.load_default(size=11)
    rows = max(1, -(-len(samples) // COLUMNS))
    width = COLUMNS * TILE_PX
    sheet = Image.new("RGB", (width, TITLE_PX + rows * (TILE_PX + LABEL_PX) + PLOT_PX), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 5), title, fill="black", font=ImageFont.load_default(size=14))
    openings = [mouth_opening(track) for track in landmarks]
    for slot, (index, frame) in enumerate(sorted(samples.items())):
        boxes = [_box(track[index]) for track in landmarks if np.isfinite(track[index, 0, 0])]
        tile = face_crop(frame, boxes)
        x = (slot % COLUMNS) * TILE_PX
        y = TITLE_PX + (slot // COLUMNS) * (TILE_PX + LABEL_PX)
        sheet.paste(tile, (x + (TILE_PX - tile.width) // 2, y + (TILE_PX - tile.height) // 2))
        time_s = index / fps
        values = " ".join(f"{o[index]:.2f}" for o in openings if np.isfinite(o[index]))
        draw.text((x + 4, y + TILE_PX + 2), f"t={time_s:.2f}s  {phone_at(list(phones), time_s) or '-'}",
                  fill="black", font=font)
        draw.text((x + 4, y + TILE_PX + 15), f"open {values or 'no face'}", fill=(90, 90, 90), font=font)
    _plot(draw, TITLE_PX + rows * (TILE_PX + LABEL_PX), width, openings, energy_db, phones, fps,
          sorted(samples), font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _box(points: np.ndarray) -> np.ndarray:
    xy = points[:, :2]
    return np.concatenate([xy.min(0), xy.max(0)])


def _plot(draw: ImageDraw.ImageDraw, top: int, width: int, openings: Sequence[np.ndarray], energy_db: np.ndarray,
          phones: Sequence[Phone], fps: float, marks: Sequence[int], font: ImageFont.FreeTypeFont) -> None:
    frame_count = max([energy_db.size, *[o.size for o in openings]])
    if frame_count < 2:
        return
    left, right, bottom, height = 4, width - 4, top + PLOT_PX - 28, PLOT_PX - 46
    draw.rectangle((left, bottom - height, right, bottom), outline=(200, 200, 200))

    def x_of(frame: float) -> float:
        return left + (right - left) * frame / (frame_count - 1)

    for index in marks:
        draw.line((x_of(index), bottom - height, x_of(index), bottom), fill=(230, 230, 230))
    for phone in phones:
        colour = (210, 0, 0) if phone.label in BILABIALS else (0, 70, 220) if phone.label in OPEN_VOWELS else None
        if colour is not None:
            draw.line((x_of(phone.mid_s * fps), bottom + 2, x_of(phone.mid_s * fps), bottom + 8), fill=colour, width=2)
    _line(draw, energy_db, x_of, bottom, height, ENERGY_COLOUR)
    peak = max([float(np.nanmax(o)) for o in openings if np.isfinite(o).any()] + [1e-6])
    for colour, opening in zip(TRACK_COLOURS, openings, strict=False):
        _line(draw, opening / peak, x_of, bottom, height, colour, already_scaled=True)
    draw.text((left + 4, top + 2), f"mouth opening (0..{peak:.2f}, colour per face), energy dB (grey); "
              "ticks: bilabial red, open vowel blue", fill="black", font=font)
    draw.text((left + 4, bottom + 9), f"0 s … {(frame_count - 1) / fps:.1f} s", fill=(90, 90, 90), font=font)


def _line(draw: ImageDraw.ImageDraw, values: np.ndarray, x_of: Callable[[float], float], bottom: int, height: int,
          colour: tuple[int, int, int], already_scaled: bool = False) -> None:
    if not np.isfinite(values).any():
        return
    scaled = values
    if not already_scaled:
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scaled = (values - low) / max(high - low, 1e-9)
    points = [(x_of(i), bottom - height * float(v)) for i, v in enumerate(scaled) if np.isfinite(v)]
    if len(points) > 1:
        draw.line(points, fill=colour, width=2)
