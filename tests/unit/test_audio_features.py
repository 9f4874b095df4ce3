"""Unit tests of the audio_features stage logic (mouthcues) on real speech from the test media (tests/media.py)."""

from __future__ import annotations

import math
import re
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[2]
STAGE_DIR = ROOT / "model_repository" / "audio_features" / "1"
if str(STAGE_DIR) not in sys.path:
    sys.path.insert(0, str(STAGE_DIR))

from mouthcues.acoustics import analyse_audio, quiet_cut_points  # noqa: E402
from mouthcues.closures import closure_frames, closure_intervals  # noqa: E402
from mouthcues.phones import PhoneSegment  # noqa: E402
from mouthcues.pipeline import (  # noqa: E402
    MouthFeatures,
    extract_mouth_features,
    n_video_frames,
    split_points,
)
from mouthcues.recognition import PhoneRecognizer  # noqa: E402
from mouthcues.words import SEARCH_PARAMETERS, RecognizerSettings, settings_from_parameters  # noqa: E402
from preprocess.audio import decode_audio, loudness_gain, normalise_loudness  # noqa: E402
from tests.media import media_file

SAMPLE_RATE_HZ = 16_000
OPEN_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH"}
JAW, LIP_OPEN, LIP_WIDTH, LIP_ROUND, CLOSURE, TEETH, TONGUE, ACTIVITY = range(8)


def load_speech(name: str) -> np.ndarray:
    """16 kHz mono float32 from a PCM16 WAV, downmixed and resampled."""
    with wave.open(str(media_file(name))) as wav:
        rate_hz, channels = wav.getframerate(), wav.getnchannels()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    audio = pcm.reshape(-1, channels).mean(axis=1) / 32768.0
    if rate_hz != SAMPLE_RATE_HZ:
        common = math.gcd(rate_hz, SAMPLE_RATE_HZ)
        audio = resample_poly(audio, SAMPLE_RATE_HZ // common, rate_hz // common)
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def decoder() -> PhoneRecognizer:
    return PhoneRecognizer()


@pytest.fixture(scope="module")
def english(decoder: PhoneRecognizer) -> MouthFeatures:
    return extract_mouth_features(load_speech("speech_en_1.wav"), 25.0, decoder)


@pytest.fixture(scope="module")
def mandarin(decoder: PhoneRecognizer) -> MouthFeatures:
    return extract_mouth_features(load_speech("speech_zh_1.wav"), 25.0, decoder)


@pytest.mark.parametrize(
    ("name", "fps"), [("speech_en_1.wav", 25.0), ("speech_en_3.wav", 29.97), ("speech_zh_1.wav", 22.1)]
)
def test_mouth_params_have_one_row_per_frame_and_stay_in_range(
    decoder: PhoneRecognizer, name: str, fps: float
) -> None:
    audio = load_speech(name)
    features = extract_mouth_features(audio, fps, decoder)
    expected = math.ceil(audio.shape[0] / SAMPLE_RATE_HZ * fps)
    assert features.mouth_params.shape == (expected, 8)
    assert features.energy.shape == (expected,)
    assert features.mouth_params.dtype == np.float32 and features.energy.dtype == np.float32
    params = features.mouth_params
    assert np.all(np.isfinite(params))
    unit_columns = [JAW, LIP_OPEN, LIP_ROUND, CLOSURE, TEETH, TONGUE, ACTIVITY]
    assert params[:, unit_columns].min() >= 0.0 and params[:, unit_columns].max() <= 1.0
    assert params[:, LIP_WIDTH].min() >= -1.0 and params[:, LIP_WIDTH].max() <= 1.0
    assert 0.0 <= features.energy.min() and features.energy.max() <= 1.0


def test_digital_silence_leaves_the_mouth_at_rest(decoder: PhoneRecognizer) -> None:
    features = extract_mouth_features(np.zeros(2 * SAMPLE_RATE_HZ, dtype=np.float32), 25.0, decoder)
    assert features.mouth_params.shape == (50, 8)
    assert np.abs(features.mouth_params).max() < 0.02
    assert features.energy.max() < 0.02


def test_samples_out_of_range_are_repaired_not_spread(decoder: PhoneRecognizer) -> None:
    audio = load_speech("speech_en_3.wav")[: 2 * SAMPLE_RATE_HZ]
    broken = audio.copy()
    broken[SAMPLE_RATE_HZ : SAMPLE_RATE_HZ + 800] = np.nan
    broken[100], broken[200], broken[300] = np.inf, -np.inf, 1e30
    repaired = audio.copy()
    repaired[SAMPLE_RATE_HZ : SAMPLE_RATE_HZ + 800] = 0.0
    repaired[100], repaired[200], repaired[300] = 1.0, -1.0, 1.0
    features = extract_mouth_features(broken, 25.0, decoder)
    assert np.isfinite(features.mouth_params).all() and np.isfinite(features.energy).all()
    np.testing.assert_array_equal(features.mouth_params, extract_mouth_features(repaired, 25.0, decoder).mouth_params)
    assert np.isnan(broken[SAMPLE_RATE_HZ])  # the caller's array is not changed


def test_pauses_around_speech_close_the_mouth(decoder: PhoneRecognizer) -> None:
    speech = load_speech("speech_en_2.wav")
    rng = np.random.default_rng(0)
    pause = (rng.standard_normal(SAMPLE_RATE_HZ) * 1e-4).astype(np.float32)  # faint room noise
    features = extract_mouth_features(np.concatenate([pause, speech, pause]), 25.0, decoder)
    params = features.mouth_params
    for quiet in (params[2:20], params[-20:-2]):  # well inside the 1 s pauses
        assert quiet[:, [JAW, LIP_OPEN, CLOSURE, TEETH, TONGUE, ACTIVITY]].max() < 0.05
        assert np.abs(quiet[:, LIP_WIDTH]).max() < 0.05
    assert params[25:-25, LIP_OPEN].max() > 0.3


@pytest.mark.parametrize("name", ["speech_en_1.wav", "speech_en_2.wav", "speech_en_3.wav", "speech_zh_1.wav"])
def test_mouth_opening_correlates_with_loudness(decoder: PhoneRecognizer, name: str) -> None:
    features = extract_mouth_features(load_speech(name), 25.0, decoder)
    correlation = np.corrcoef(features.mouth_params[:, LIP_OPEN], features.energy)[0, 1]
    assert correlation > 0.3


def test_bilabial_phones_press_the_lips_together(english: MouthFeatures) -> None:
    params, fps = english.mouth_params, 25.0
    bilabials = [s for s in english.phones if s.phone in {"P", "B", "M"}]
    assert len(bilabials) >= 5
    closed = 0
    for segment in bilabials:
        first = max(int(segment.start_s * fps) - 1, 0)
        last = int(math.ceil(segment.end_s * fps)) + 1
        window = params[first:last]
        if np.any((window[:, CLOSURE] > 0.9) & (window[:, LIP_OPEN] < 0.05)):
            closed += 1
    assert closed == len(bilabials)
    # Every closure is seen: at least two consecutive shut frames at 25 fps.
    shut = (params[:, CLOSURE] > 0.9).astype(int)
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], shut, [0]]))))[::2]
    assert runs.size > 0 and runs.min() >= 2
    # Closure is an event, not a default: most frames are not closed.
    assert np.mean(params[:, CLOSURE] > 0.5) < 0.35


def test_bilabial_closure_starts_at_the_phone_or_slightly_before(decoder: PhoneRecognizer) -> None:
    fps = 100.0
    features = extract_mouth_features(load_speech("speech_en_2.wav"), fps, decoder)
    closed = features.mouth_params[:, CLOSURE] > 0.9
    bilabials = [s for s in features.phones if s.phone in {"P", "B", "M"}]
    assert len(bilabials) >= 4
    onsets_s = []
    for previous, segment in zip([None, *bilabials[:-1]], bilabials):
        first, last = int(round(segment.start_s * fps)), int(round(segment.end_s * fps))
        assert closed[first:last].all(), segment  # shut for the whole phone
        onset = first
        while onset > 0 and closed[onset - 1]:
            onset -= 1
        if previous is not None and onset / fps <= previous.end_s:
            continue  # one closure with the bilabial before it ("i'm many")
        onsets_s.append(onset / fps - segment.start_s)
    # Anticipation of up to 100 ms, never late.
    assert onsets_s and all(-0.1 <= onset_s <= 0.0 for onset_s in onsets_s), onsets_s


def test_mandarin_speech_drives_a_moving_mouth(mandarin: MouthFeatures) -> None:
    params = mandarin.mouth_params
    assert np.mean(params[:, ACTIVITY] > 0.5) > 0.5
    assert params[:, JAW].max() > 0.3
    assert params[:, LIP_OPEN].std() > 0.08
    # Open and close many times (syllables), not a static pose.
    opening = params[:, LIP_OPEN] > 0.2
    assert np.count_nonzero(np.diff(opening.astype(int)) == 1) >= 8


@pytest.mark.parametrize("name", ["speech_en_1.wav", "speech_en_3.wav", "speech_zh_1.wav"])
def test_mouth_leads_the_sound_and_never_lags(decoder: PhoneRecognizer, name: str) -> None:
    fps = 100.0
    features = extract_mouth_features(load_speech(name), fps, decoder)
    opening = features.mouth_params[:, LIP_OPEN] - features.mouth_params[:, LIP_OPEN].mean()
    energy = features.energy - features.energy.mean()
    n = len(opening)
    # lead > 0: the opening at frame k matches the loudness of frame k + lead (mouth first).
    leads = list(range(-20, 21))  # ±200 ms
    scores = [
        np.dot(opening[max(0, -lead) : n - max(0, lead)], energy[max(0, lead) : n - max(0, -lead)])
        for lead in leads
    ]
    best_lead_s = leads[int(np.argmax(scores))] / fps
    assert 0.0 <= best_lead_s <= 0.1


def test_long_audio_is_decoded_in_quiet_cut_pieces() -> None:
    speech = load_speech("speech_en_1.wav")
    audio = np.tile(speech, 9)  # 72 s
    tracks = analyse_audio(audio)
    cuts = quiet_cut_points(tracks, chunk_frames=3000, search_frames=300)
    assert cuts[0] == 0 and cuts[-1] == tracks.n_frames
    assert len(cuts) == 4
    for previous, cut in zip(cuts[:-2], cuts[1:-1]):
        nominal = previous + 3000
        assert nominal - 300 <= cut < nominal + 300
        # each cut sits at the quietest moment of its search window
        assert tracks.level_db[cut] <= tracks.level_db[nominal - 300 : nominal + 300].min() + 1e-9


def test_video_frame_count_is_the_ceiling_of_duration_times_fps() -> None:
    assert n_video_frames(16_000, 25.0) == 25
    assert n_video_frames(16_001, 25.0) == 26
    assert n_video_frames(8_000, 29.97) == 15
    assert n_video_frames(0, 25.0) == 0


def test_empty_audio_gives_no_frames_and_bad_fps_is_refused(decoder: PhoneRecognizer) -> None:
    features = extract_mouth_features(np.zeros(0, dtype=np.float32), 25.0, decoder)
    assert features.mouth_params.shape == (0, 8) and features.energy.shape == (0,)
    with pytest.raises(ValueError):
        extract_mouth_features(np.zeros(1600, dtype=np.float32), 0.0, decoder)


def _frames_during(segment: PhoneSegment, fps: float) -> np.ndarray:
    """Video frames whose display interval centre lies inside the phone (its middle frame if none)."""
    first = int(np.ceil(segment.start_s * fps - 0.5))
    last = int(np.ceil(segment.end_s * fps - 0.5))
    return np.arange(first, last) if last > first else np.array([int(0.5 * (segment.start_s + segment.end_s) * fps)])


def test_open_vowels_open_wider_than_any_bilabial(english: MouthFeatures) -> None:
    opening = english.mouth_params[:, LIP_OPEN]
    vowels = [opening[_frames_during(s, 25.0)].mean() for s in english.phones if s.phone in OPEN_VOWELS]
    bilabials = [opening[_frames_during(s, 25.0)].mean() for s in english.phones if s.phone in {"P", "B", "M"}]
    assert len(vowels) >= 10 and len(bilabials) >= 5
    assert max(bilabials) < 0.05
    # Medians of 0.30-0.40 on the three English clips; which vowels count moves with the words heard.
    assert min(vowels) > 0.1 and np.median(vowels) > 0.25


def test_english_is_word_aligned_and_mandarin_falls_back_to_allphone(decoder: PhoneRecognizer) -> None:
    english = load_speech("speech_en_3.wav")
    decoding = decoder.decode_pieces(english, [0, analyse_audio(english).n_frames], analyse_audio(english).activity)
    assert decoding.aligned_spans_s == ((0.0, analyse_audio(english).n_frames / 100),)
    # Forced alignment follows the dictionary: "benchmark" is B EH N CH M AA R K.
    phones = [s.phone for s in decoding.segments]
    assert "B EH N CH M AA R K" in " ".join(phones)
    mandarin = load_speech("speech_zh_1.wav")
    decoding = decoder.decode_pieces(mandarin, [0, analyse_audio(mandarin).n_frames], analyse_audio(mandarin).activity)
    assert decoding.aligned_spans_s == ()
    assert sum(s.phone not in {"SIL", "+NSN+", "+SPN+"} for s in decoding.segments) > 30


def test_speech_from_the_very_first_sample_keeps_its_first_phone(decoder: PhoneRecognizer) -> None:
    # talk_a says "my biggest weakness..." from its first sample: without a silent lead-in the
    # recogniser heard "i'm biggest" and left the first frames open where the lips are shut.
    speech = normalise_loudness(decode_audio(media_file("talk_a.mp4"), SAMPLE_RATE_HZ, 600))
    features = extract_mouth_features(speech, 25.0, decoder)
    first = next(s for s in features.phones if s.phone != "SIL")
    assert first.phone == "M" and first.start_s == 0.0, first
    assert (features.mouth_params[:2, CLOSURE] > 0.9).all()
    assert min(s.start_s for s in features.phones) >= 0.0  # nothing placed in the lead-in


@pytest.mark.parametrize("fps", [25.0, 30.0, 10.0])
def test_short_closures_shut_at_least_two_frames_covering_the_phone(fps: float) -> None:
    activity = np.ones(200)
    for start_s in np.arange(0.50, 0.55, 0.005):
        phone = PhoneSegment("B", float(start_s), float(start_s) + 0.03)
        intervals = closure_intervals([phone], activity, 100.0)
        closed = closure_frames(intervals, 50, fps)
        assert np.count_nonzero(closed) >= 2
        assert closed[_frames_during(phone, fps)].min() == 1.0
        shut = np.flatnonzero(closed)
        assert np.all(np.diff(shut) == 1)  # one run
        assert shut[-1] / fps < phone.end_s + 0.5 / fps  # open again about at the release
        assert (shut[0] + 1) / fps > phone.start_s - 0.1  # anticipation of at most ~100 ms


def test_bilabials_heard_in_silence_do_not_close_the_lips() -> None:
    activity = np.zeros(200)
    intervals = closure_intervals([PhoneSegment("M", 0.5, 0.6)], activity, 100.0)
    assert intervals == []
    assert closure_frames(intervals, 50, 25.0).max() == 0.0


@pytest.mark.parametrize("fps", [25.0, 29.97])
def test_parts_cut_in_a_pause_and_concatenate_to_the_whole(decoder: PhoneRecognizer, fps: float) -> None:
    audio = decode_audio(media_file("talk_a.mp4"), SAMPLE_RATE_HZ, 60.0)  # a 0.44 s pause at 2.4-2.8 s
    whole = extract_mouth_features(audio, fps, decoder)
    parts = [extract_mouth_features(audio, fps, decoder, part=i, parts=2) for i in range(2)]
    assert all(p.mouth_params.shape[0] > 0 for p in parts)
    joined = np.concatenate([p.mouth_params for p in parts])
    assert joined.shape == whole.mouth_params.shape
    # loudness and voice activity are measured on the whole audio, so they agree exactly
    np.testing.assert_array_equal(np.concatenate([p.energy for p in parts]), whole.energy)
    np.testing.assert_array_equal(joined[:, 7], whole.mouth_params[:, 7])
    # the phones come from shorter decodes: close to the whole's, not identical
    assert np.abs(joined[:, :7] - whole.mouth_params[:, :7]).mean() < 0.05
    acoustic = analyse_audio(audio)
    bound = split_points(acoustic, 2)[1]
    assert acoustic.energy[bound] <= 0.1


@pytest.mark.parametrize(("gap_s", "cut"), [(0.06, False), (0.12, False), (0.3, True)])
def test_parts_are_cut_in_pauses_not_in_the_silence_of_a_stop(gap_s: float, cut: bool) -> None:
    """A stop's closure (or a gap between words) is silent for 20-90 ms; a pause between
    phrases lasts longer: only the pause may bound a part."""
    t = np.arange(2 * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    hum = (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    silence = np.zeros(SAMPLE_RATE_HZ // 2, np.float32)  # the recording's own silence floor
    audio = np.concatenate([silence, hum, np.zeros(int(gap_s * SAMPLE_RATE_HZ), np.float32), hum, silence])
    acoustic = analyse_audio(audio)
    bound = split_points(acoustic, 2)[1]
    if cut:
        assert 2.5 <= bound / 100 <= 2.5 + gap_s and acoustic.energy[bound] <= 0.1
    else:
        assert bound == 0  # no part boundary: the second part takes everything


def test_sound_without_a_pause_near_the_middle_is_not_cut(decoder: PhoneRecognizer) -> None:
    t = np.arange(3 * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    hum = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    audio = np.concatenate([np.zeros(int(0.8 * SAMPLE_RATE_HZ)), hum]).astype(np.float32)  # 3.8 s
    assert split_points(analyse_audio(audio), 2)[1] == 0  # the second part takes everything
    parts = [extract_mouth_features(audio, 25.0, decoder, part=i, parts=2) for i in range(2)]
    assert parts[0].mouth_params.shape[0] == 0 and parts[1].mouth_params.shape[0] == 95
    with pytest.raises(ValueError):
        extract_mouth_features(audio, 25.0, decoder, part=2, parts=2)


def test_equal_speech_gives_equal_mouths_whatever_the_decoder_heard_before(decoder: PhoneRecognizer) -> None:
    """PocketSphinx carries state between utterances; the stage resets it, so a request's
    answer does not depend on which requests its instance served before (determinism)."""
    english, mandarin, other = (load_speech(name) for name in ("speech_en_1.wav", "speech_zh_1.wav", "speech_en_3.wav"))
    english *= loudness_gain(english)  # as the orchestrator sends it
    fresh = PhoneRecognizer()
    first = extract_mouth_features(english, 25.0, fresh)  # a decoder's first request
    answers = [extract_mouth_features(english, 25.0, fresh)]
    for before in (mandarin, other):  # allphone pieces, word-aligned pieces
        extract_mouth_features(before, 25.0, decoder)
        answers.append(extract_mouth_features(english, 25.0, decoder))
    for later in answers:
        assert [s.describe() for s in later.phones] == [s.describe() for s in first.phones]
        np.testing.assert_array_equal(later.mouth_params, first.mouth_params)


def test_speech_of_several_pieces_splits_at_the_piece_cuts_exactly(decoder: PhoneRecognizer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Long speech is decoded in pieces anyway; parts made of whole pieces give the whole's
    phones, and the mouth differs only next to the cut (co-articulation across it)."""
    import mouthcues.pipeline as pipeline

    monkeypatch.setattr(pipeline, "DECODE_CHUNK_S", 3.0)  # an 8 s clip in 3 s pieces: as 60 s in 30 s ones
    monkeypatch.setattr(pipeline, "CUT_SEARCH_S", 1.0)
    audio = load_speech("speech_en_1.wav")
    whole = extract_mouth_features(audio, 25.0, decoder)
    parts = [extract_mouth_features(audio, 25.0, decoder, part=i, parts=2) for i in range(2)]
    assert [s.describe() for p in parts for s in p.phones] == [s.describe() for s in whole.phones]
    joined = np.concatenate([p.mouth_params for p in parts])
    assert joined.shape == whole.mouth_params.shape
    cut_s = parts[0].mouth_params.shape[0] / 25.0
    cuts = quiet_cut_points(analyse_audio(audio), 300, 100)
    assert any(abs(cut_s - c / 100.0) <= 0.04 for c in cuts[1:-1])  # the bound is a piece cut
    differ = np.flatnonzero(np.abs(joined - whole.mouth_params).max(axis=1) > 1e-6) / 25.0
    assert np.all(np.abs(differ - cut_s) <= 1.0)  # the dominance tails reach about a second
    assert np.abs(joined - whole.mouth_params).max() < 0.1


def _config_parameters(path: Path) -> dict[str, dict[str, str]]:
    """The `parameters: { key: ... value: { string_value: ... } }` entries of a config.pbtxt."""
    found = re.findall(r'parameters:\s*\{\s*key:\s*"(\w+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', path.read_text())
    return {key: {"string_value": value} for key, value in found}


def test_the_served_word_search_is_the_one_measured() -> None:
    # config.pbtxt sets the search Triton serves; the defaults (and the numbers in their
    # docstring) describe the same search.
    parameters = _config_parameters(STAGE_DIR.parent / "config.pbtxt")
    assert set(SEARCH_PARAMETERS) <= set(parameters)
    assert settings_from_parameters(parameters) == RecognizerSettings()


def test_search_parameters_are_whole_numbers_and_absent_ones_keep_the_defaults() -> None:
    assert settings_from_parameters({}) == RecognizerSettings()
    narrow = settings_from_parameters({"max_hmms_per_frame": {"string_value": "1000"}})
    assert narrow.max_hmms_per_frame == 1000 and narrow.max_words_per_frame == RecognizerSettings().max_words_per_frame
    for bad in ("0", "-5", "2.5", "wide", ""):
        with pytest.raises(ValueError, match="max_words_per_frame"):
            settings_from_parameters({"max_words_per_frame": {"string_value": bad}})
