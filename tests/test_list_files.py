"""List-file parsing, annotated-frame selection and the clip builder (design §6.3)."""

import pytest

from data.lists import (
    StillEntry,
    VideoEntry,
    annotated_frames,
    build_clips,
    clip_rate,
    dataset_names,
    image_name,
    ping_pong,
    read_video_list,
    select_videos,
)
from data.readers import DataError

LIST_TEXT = """\
sod/DUTS-TR/images/a.jpg sod/DUTS-TR/GT/a.png
vsod/DAVSOD_Training_Set/select_0001/Imgs .png vsod/DAVSOD_Training_Set/select_0001/GT_object_level .png
vsod/VOS/JPEGImages/102 .jpg vsod/VOS/Annotations/102 .png

vsod/DAVIS/bear/Imgs .jpg vsod/DAVIS/bear/ground-truth .png
vsod/SYN-V-test/syn_v03/Imgs .png vsod/SYN-V-test/syn_v03/GT_object_level .png
"""


def test_read_video_list_columns_names_and_datasets(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text(LIST_TEXT)
    entries = read_video_list(path)
    assert entries[0] == StillEntry("sod/DUTS-TR/images/a.jpg", "sod/DUTS-TR/GT/a.png")
    videos = entries[1:]
    assert all(isinstance(e, VideoEntry) for e in videos)
    assert [(e.video, e.dataset) for e in videos] == [
        ("select_0001", "DAVSOD"), ("102", "VOS"), ("bear", "DAVIS"), ("syn_v03", "SYN-V-test")]
    assert videos[1] == VideoEntry("vsod/VOS/JPEGImages/102", ".jpg", "vsod/VOS/Annotations/102", ".png")
    assert [e.video for e in select_videos(entries, "VOS")] == ["102"]
    assert [e.video for e in select_videos(entries, "SYN-V-test")] == ["syn_v03"]
    assert len(select_videos(entries)) == 4
    assert dataset_names(entries) == ["DAVSOD", "VOS", "DAVIS", "SYN-V-test"]


def test_read_video_list_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read list file .*missing.txt"):
        read_video_list(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("a b c\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 2 or 4 columns, got 3"):
        read_video_list(bad)


def test_annotated_frames_lexicographic_and_cut(tmp_path):
    entry = VideoEntry("v/Imgs", ".jpg", "v/GT", ".png")
    (tmp_path / "v/GT").mkdir(parents=True)
    for name in ["v_10.png", "v_9.png", "v_100.png", "v_11.png", "notes.txt"]:
        (tmp_path / "v/GT" / name).write_bytes(b"")
    assert annotated_frames(tmp_path, entry) == ["v_10.png", "v_100.png", "v_11.png", "v_9.png"]
    assert annotated_frames(tmp_path, entry, cut=0.5) == ["v_10.png", "v_100.png"]
    assert annotated_frames(tmp_path, entry, cut=0.25) == ["v_10.png"]
    assert image_name("v_10.png", entry) == "v_10.jpg"
    with pytest.raises(DataError, match="after cut"):
        annotated_frames(tmp_path, entry, cut=0.2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no annotated frames \(\*\.png\) in .*empty"):
        annotated_frames(tmp_path, VideoEntry("x", ".jpg", "empty", ".png"))
    with pytest.raises(DataError, match="annotation folder not found: .*nothere"):
        annotated_frames(tmp_path, VideoEntry("x", ".jpg", "nothere", ".png"))


def frames(ids, prefix="v"):
    return [f"{prefix}_{i:05d}.png" for i in ids]


def test_ping_pong():
    assert ping_pong(list("abc"), 8) == list("abcbabcb")
    assert ping_pong(list("ab"), 5) == list("ababa")
    assert ping_pong(["a"], 3) == ["a", "a", "a"]
    assert build_clips(list("abc"), 8, 4) == [list("abcbabcb")]


def test_clip_rate_from_mean_gap():
    assert clip_rate(frames(range(0, 100)), 4) == 4
    assert clip_rate(frames(range(0, 100, 2)), 4) == 2
    assert clip_rate(frames(range(0, 100, 5)), 8) == 1  # 8 // 5 = 1
    assert clip_rate(frames(range(0, 100, 5)), 1) == 1
    assert clip_rate(["a.png", "b.png"], 4) == 4  # no frame numbers: taken as consecutive


def test_build_clips_chunks_rate_and_tail():
    names = frames(range(20))
    clips = build_clips(names, 8, 4)  # rate min(4, 20 // 8) = 2, chunk 16, tail chunk = last 16
    ids = [[int(n[2:7]) for n in clip] for clip in clips]
    assert ids == [list(range(0, 16, 2)), list(range(1, 16, 2)), list(range(4, 20, 2)), list(range(5, 20, 2))]
    assert build_clips(frames(range(16)), 8, 1) == [frames(range(8)), frames(range(8, 16))]
    assert build_clips(frames(range(8)), 8, 8) == [frames(range(8))]
    # gap target 8 on 40 consecutive frames: rate min(8, 5) = 5, one chunk of 40, 5 interleaved clips.
    clips = build_clips(frames(range(40)), 8, 8)
    assert [[int(n[2:7]) for n in c] for c in clips] == [list(range(i, 40, 5)) for i in range(5)]
    # every clip is in temporal order and has nframes frames
    for target in (1, 4, 8):
        for clip in build_clips(frames(range(0, 333, 3)), 8, target):
            assert len(clip) == 8 and clip == sorted(clip)
