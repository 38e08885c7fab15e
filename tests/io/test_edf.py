"""EDF and BDF (EDF+/BDF+) files as offline EMG input (:mod:`closedloop.io.edf` through
:func:`closedloop.io.files.load_emg`): files written with edfio itself, the way
PhysioNet and EMG-BIDS datasets hold them (an annotations signal, slower non-EMG
signals, units from V to µV), and broken ones, each refused with a message that names
the file and what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.errors import InputError, RecordingDamagedError
from closedloop.io.files import load_emg

edfio = pytest.importorskip("edfio")

FS = 2000.0
SECONDS = 3
RNG = np.random.default_rng(7)
#: EMG in microvolts: noise, a burst on the first channel from 1 s
EMG_UV = RNG.normal(0.0, 5.0, (int(FS * SECONDS), 2))
EMG_UV[int(FS):int(1.5 * FS), 0] *= 40.0


def write_edf(path: Path, *, dimension: str = "uV", scale: float = 1.0, bdf: bool = False,
              labels: tuple[str, str] = ("EMG biceps", "EMG triceps"),
              extra: bool = True, annotations: tuple = ()) -> np.ndarray:
    """An EDF (or BDF) file: two EMG signals at 2 kHz in ``dimension`` (the µV values
    times ``scale``), a 100 Hz accelerometer in g and a 2 kHz ECG in µV-less counts
    when ``extra``, plus an annotation; returns the EMG as written (file units)."""
    Sig, File = (edfio.BdfSignal, edfio.Bdf) if bdf else (edfio.EdfSignal, edfio.Edf)
    x = EMG_UV * scale
    top = float(np.abs(x).max()) * 1.01
    signals = [Sig(x[:, k], FS, label=labels[k], physical_dimension=dimension,
                   physical_range=(-top, top)) for k in range(2)]
    if extra:
        acc = np.sin(np.arange(100 * SECONDS) / 10.0)
        signals.append(Sig(acc, 100, label="ACC x", physical_dimension="g",
                           physical_range=(-2.0, 2.0)))
    notes = [edfio.EdfAnnotation(1.0, None, "onset/biceps"), *annotations]
    File(signals, annotations=notes).write(path)
    return x


def resolution(path: Path) -> np.ndarray:
    """Per EMG signal, the step of its digital values in file units: the physical range
    the header holds (edfio rounds it to 8 characters) over the digital range."""
    rec = (edfio.read_bdf if path.suffix == ".bdf" else edfio.read_edf)(path)
    return np.array([(s.physical_max - s.physical_min) / (s.digital_max - s.digital_min)
                     for s in rec.signals[:2]])


@pytest.mark.parametrize(("dimension", "scale", "volts_per_unit"), [
    ("uV", 1.0, 1e-6), ("mV", 1e-3, 1e-3), ("V", 1e-6, 1.0)])
def test_an_edf_with_annotations_and_a_slower_signal_reads_its_emg_in_volts(
        tmp_path, dimension, scale, volts_per_unit):
    path = tmp_path / "rec.edf"
    written = write_edf(path, dimension=dimension, scale=scale)
    d = load_emg(path)
    assert d.fs == FS and d.channels == ("biceps", "triceps")  # EDF+'s "EMG " type prefix off
    assert d.samples.shape == (int(FS * SECONDS), 2)  # the accelerometer is not EMG
    step = resolution(path) * volts_per_unit
    assert np.all(np.abs(d.samples - written * volts_per_unit) <= step / 2 * (1 + 1e-6))
    assert np.abs(d.samples).max() == pytest.approx(np.abs(EMG_UV).max() * 1e-6, rel=1e-3)
    assert "ACC x" in d.note and "100 Hz" in d.note


def test_a_bdf_keeps_24_bits(tmp_path):
    path = tmp_path / "rec.bdf"
    written = write_edf(path, bdf=True, extra=False)
    d = load_emg(path)
    step = resolution(path) * 1e-6
    assert step.max() < 2 * np.abs(written).max() * 1e-6 / 2**20  # 24 bits (16: 2**-15)
    assert np.all(np.abs(d.samples - written * 1e-6) <= step / 2 * (1 + 1e-6))
    assert d.note == ""


def test_micro_sign_in_latin1_or_utf8_is_microvolts(tmp_path):
    """EDF headers are ASCII, but files say 'µV' in Latin-1 (one byte) or UTF-8 (two)."""
    path = tmp_path / "rec.edf"
    write_edf(path, extra=False)
    want = load_emg(path).samples
    raw = path.read_bytes()
    n = 3  # two EMG signals and the annotations signal
    at = 256 + n * (16 + 80)  # the physical dimensions, 8 bytes each
    for micro in ("µV".encode("latin-1"), "µV".encode()):  # Latin-1, UTF-8
        dims = b"".join(micro.ljust(8) if k < 2 else raw[at + 8 * k: at + 8 * k + 8]
                        for k in range(n))
        other = tmp_path / f"micro{len(micro)}.edf"
        other.write_bytes(raw[:at] + dims + raw[at + 8 * n:])
        np.testing.assert_array_equal(load_emg(other).samples, want)


def test_columns_pick_signals_and_refuse_mixed_rates_and_non_voltages(tmp_path):
    path = tmp_path / "rec.edf"
    write_edf(path)
    assert load_emg(path, columns=[1]).channels == ("triceps",)
    with pytest.raises(InputError, match="different sampling rates") as info:
        load_emg(path, columns=[0, 2])
    assert "'EMG biceps' 2000 Hz" in str(info.value) and "'ACC x' 100 Hz" in str(info.value)
    with pytest.raises(InputError, match="is in 'g', not a voltage"):
        load_emg(path, columns=[2])
    with pytest.raises(InputError, match="column 3 does not exist") as info:
        load_emg(path, columns=[3])
    assert "2: 'ACC x' (100 Hz, g)" in str(info.value)  # lists what there is


def test_the_emg_is_the_highest_rate_among_voltages_emg_labels_first(tmp_path):
    path = tmp_path / "rec.edf"
    x = RNG.normal(0, 5.0, (int(FS * SECONDS), 3))
    sigs = [edfio.EdfSignal(x[::4, 0], FS / 4, label="EEG Fpz", physical_dimension="uV"),
            edfio.EdfSignal(x[:, 1], FS, label="ECG", physical_dimension="mV"),
            edfio.EdfSignal(x[:, 2], FS, label="EMG chin", physical_dimension="uV")]
    edfio.Edf(sigs).write(path)
    assert load_emg(path).channels == ("chin",)  # typed EMG by the EDF+ label
    plain = tmp_path / "plain.edf"
    sigs = [edfio.EdfSignal(x[::4, 0], FS / 4, label="slow", physical_dimension="uV"),
            edfio.EdfSignal(x[:, 1], FS, label="a", physical_dimension="uV"),
            edfio.EdfSignal(x[:, 2], FS, label="trigger", physical_dimension="")]
    edfio.Edf(sigs).write(plain)
    d = load_emg(plain)
    assert d.channels == ("a",) and "'slow' (500 Hz, uV)" in d.note and "'trigger'" in d.note
    none = tmp_path / "none.edf"
    edfio.Edf([edfio.EdfSignal(x[:, 1], FS, label="force", physical_dimension="N")]).write(none)
    with pytest.raises(InputError, match="no signal is in volts") as info:
        load_emg(none)
    assert "'force' (2000 Hz, N)" in str(info.value)


def test_a_bids_channels_table_names_the_emg(tmp_path):
    path = tmp_path / "sub-01_task-x_emg.edf"
    write_edf(path, labels=("biceps", "ecg"))
    tsv = tmp_path / "sub-01_task-x_channels.tsv"
    tsv.write_text("name\ttype\tunits\necg\tECG\tuV\nbiceps\tEMG\tuV\nACC x\tMISC\tg\n")
    assert load_emg(path).channels == ("biceps",)
    tsv.write_text("name\ttype\tunits\nbiceps\tEMG\tuV\nbrachialis\tEMG\tuV\n")
    with pytest.raises(InputError, match="'brachialis' that the file does not hold"):
        load_emg(path)
    tsv.write_text("name\ttype\nbiceps\tMISC\n")
    with pytest.raises(InputError, match="no channel of type EMG"):
        load_emg(path)
    tsv.write_text("name\tunits\nbiceps\tuV\n")
    with pytest.raises(InputError, match="needs column"):
        load_emg(path)
    assert load_emg(path, columns=[0, 1]).channels == ("biceps", "ecg")  # columns win


def test_emg_the_channels_table_marks_bad_is_left_out_and_said(tmp_path):
    """A BIDS channels table's ``status`` column: an EMG channel marked ``bad`` (a lost
    electrode) is not read, and the note says so; every one bad is refused, saying how to
    read them anyway; ``columns`` reads them."""
    path = tmp_path / "sub-01_task-x_emg.bdf"
    write_edf(path, bdf=True)
    tsv = tmp_path / "sub-01_task-x_channels.tsv"
    tsv.write_text("name\ttype\tunits\tstatus\nEMG biceps\tEMG\tuV\tgood\n"
                   "EMG triceps\tEMG\tuV\tn/a\n")
    assert load_emg(path).channels == ("biceps", "triceps")
    tsv.write_text("name\ttype\tunits\tstatus\nEMG biceps\tEMG\tuV\tgood\n"
                   "EMG triceps\tEMG\tuV\tBAD\n")
    got = load_emg(path)
    assert got.channels == ("biceps",) and got.left_out == ("triceps",)
    assert np.array_equal(got.samples[:, 0], load_emg(path, columns=[0]).samples[:, 0])
    assert got.note.startswith("EMG marked bad, left out: 'EMG triceps' (2000 Hz, uV); "
                               "not EMG: 'ACC x' (100 Hz, g);")  # triceps is EMG, not 'not EMG'
    tsv.write_text("name\ttype\tstatus\nEMG biceps\tEMG\tbad\nEMG triceps\tEMG\tbad\n")
    with pytest.raises(InputError, match=r"every EMG channel \('EMG biceps', 'EMG triceps'\) "
                                         r"has status 'bad'.*--columns"):
        load_emg(path)
    assert load_emg(path, columns=[0, 1]).channels == ("biceps", "triceps")


def test_a_trailing_bad_acq_skip_is_padding_not_data(tmp_path):
    """closedloop's export pads its last data record and marks it BAD_ACQ_SKIP."""
    path = tmp_path / "rec.bdf"
    pad = edfio.EdfAnnotation(2.5, 0.5, "BAD_ACQ_SKIP")
    write_edf(path, bdf=True, extra=False, annotations=(pad,))
    d = load_emg(path)
    assert d.samples.shape[0] == int(2.5 * FS) and "padding" in d.note
    middle = tmp_path / "middle.bdf"  # a skip that does not reach the end stays data
    write_edf(middle, bdf=True, extra=False,
              annotations=(edfio.EdfAnnotation(1.0, 0.5, "BAD_ACQ_SKIP"),))
    assert load_emg(middle).samples.shape[0] == int(FS * SECONDS)


@pytest.mark.parametrize("bdf", [False, True])
def test_a_file_cut_in_half_is_damaged(tmp_path, bdf):
    whole = tmp_path / ("whole.bdf" if bdf else "whole.edf")
    write_edf(whole, bdf=bdf)
    raw = whole.read_bytes()
    cut = tmp_path / ("cut.bdf" if bdf else "cut.edf")
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RecordingDamagedError) as info:
        load_emg(cut)
    msg = str(info.value)
    assert str(cut) in msg and "cut short" in msg and "announces 3 data record(s)" in msg
    assert "holds 1 whole record(s)" in msg
    head = tmp_path / ("head.bdf" if bdf else "head.edf")
    head.write_bytes(raw[:300])  # the header itself is cut
    with pytest.raises(RecordingDamagedError, match="less than its 1280-byte header"):
        load_emg(head)


#: name -> (bytes of the file from the whole one's, words the message must hold)
BROKEN = {
    "garbage": (lambda raw: np.random.default_rng(1).bytes(5000), "not an EDF or BDF file"),
    "empty": (lambda raw: b"", "the file is empty"),
    "a header number that is not": (lambda raw: raw[:236] + b"x" * 8 + raw[244:],
                                    "header is corrupt"),
    "bytes beyond the records": (lambda raw: raw + b"\0" * 10, "is corrupt"),
    "records of no duration": (lambda raw: raw[:244] + b"0".ljust(8) + raw[252:],
                               "data records of 0 s"),
    "a discontinuous EDF+D": (lambda raw: raw[:192] + b"EDF+D".ljust(44) + raw[236:],
                              "discontinuous"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_are_refused_with_what_is_wrong(tmp_path, case):
    whole = tmp_path / "whole.edf"
    write_edf(whole)
    make, words = BROKEN[case]
    path = tmp_path / "broken.edf"
    path.write_bytes(make(whole.read_bytes()))
    with pytest.raises(InputError) as info:
        load_emg(path)
    assert words in str(info.value) and str(path) in str(info.value)


def test_without_edfio_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "rec.edf"
    write_edf(path)
    monkeypatch.setitem(sys.modules, "edfio", None)  # import edfio -> ImportError
    with pytest.raises(InputError, match=r"pip install 'closedloop\[bids\]'") as info:
        load_emg(path)
    assert str(path) in str(info.value)


def test_a_record_count_of_minus_one_is_read_from_the_file_size(tmp_path):
    """EDF allows -1 data records (still recording when the header was written): the
    whole records the file holds are the data; a partial one is damage."""
    whole = tmp_path / "whole.edf"
    write_edf(whole)
    raw = whole.read_bytes()
    unknown = tmp_path / "unknown.edf"
    unknown.write_bytes(raw[:236] + b"-1".ljust(8) + raw[244:])
    np.testing.assert_array_equal(load_emg(unknown).samples, load_emg(whole).samples)
    unknown.write_bytes(raw[:236] + b"-1".ljust(8) + raw[244:-10])
    with pytest.raises(RecordingDamagedError, match="cut short: it ends 8212 bytes into"):
        load_emg(unknown)
