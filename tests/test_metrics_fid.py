"""FID / KID / IS: known answers, an independent FID computation, and the `layout2img fid` command."""
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from layout2img.cli import main
from layout2img.errors import DataError
from layout2img.metrics import fid as fidm


# -- closed forms ---------------------------------------------------------------------------------
def test_frechet_distance_of_known_gaussians_matches_closed_form():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum (sd1 - sd2)^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    sd1, sd2 = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
    got = fidm.frechet_distance(mu1, np.diag(sd1**2), mu2, np.diag(sd2**2))
    assert got == pytest.approx(5.0 + 1.0 + 0.0 + 4.0, rel=1e-9)
    # S1 = c^2 S2 with a full (non-diagonal) S2: FID = |dmu|^2 + (1 - c)^2 tr(S2)
    a = np.random.default_rng(0).normal(size=(4, 4))
    s2 = a @ a.T + np.eye(4)
    got = fidm.frechet_distance(np.zeros(4), 9 * s2, np.ones(4), s2)
    assert got == pytest.approx(4.0 + 4 * np.trace(s2), rel=1e-9)
    assert fidm.frechet_distance(mu1, s2[:3, :3], mu1, s2[:3, :3]) == pytest.approx(0, abs=1e-9)


def test_fid_of_samples_from_two_gaussians_approaches_closed_form():
    rng = np.random.default_rng(1)
    n = 40000
    fa = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + [0.0, 0.0, 0.0]
    fb = rng.normal(size=(n, 3)) * [2.0, 2.0, 0.5] + [1.0, 0.0, 0.0]
    expected = 1.0 + (1.0 - 2.0) ** 2
    assert fidm.fid_from_features(fa, fb) == pytest.approx(expected, abs=0.06)


def test_few_samples_fid_in_their_span_equals_the_full_size_computation():
    rng = np.random.default_rng(2)
    fa, fb = rng.normal(size=(5, 64)) * 3, rng.normal(size=(7, 64)) + 0.3
    full = fidm.frechet_distance(*fidm.feature_statistics(fa), *fidm.feature_statistics(fb))
    assert fidm.fid_from_features(fa, fb) == pytest.approx(full, rel=1e-6)
    assert fidm.fid_from_features(fa, fa) == pytest.approx(0, abs=1e-8)


def test_statistics_need_two_samples_and_matching_shapes():
    with pytest.raises(DataError, match="at least 2 images"):
        fidm.feature_statistics(np.zeros((1, 8)))
    with pytest.raises(DataError, match="different shapes"):
        fidm.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_and_kid_accumulators_over_updates_equal_the_functions_of_all_rows():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(9, 16)), rng.normal(size=(6, 16)) + 0.5
    fid, kid = fidm.FrechetInceptionDistance(), fidm.KernelInceptionDistance(num_subsets=4, subset_size=5, seed=2)
    for metric in (fid, kid):
        metric.update(real[:4], real=True)
        metric.update(fake, real=False)
        metric.update(real[4:], real=True)
    out = fid.compute()
    assert out["value"] == pytest.approx(fidm.fid_from_features(real, fake), rel=1e-12)
    assert out["warning"] == fidm.small_sample_note(9, 6, 16) and "only 6 images" in out["warning"]
    assert kid.compute() == fidm.kernel_inception_distance(real, fake, 4, 5, 2)
    only_real = fidm.FrechetInceptionDistance()
    only_real.update(real, real=True)
    with pytest.raises(DataError, match="FrechetInceptionDistance: no generated features given"):
        only_real.compute()
    with pytest.raises(DataError, match=r"features must be \(N, D\), got shape \(16,\)"):
        fid.update(real[0], real=True)


# -- KID and IS -----------------------------------------------------------------------------------
def _mmd2_by_loops(x, y):
    k = lambda a, b: (a @ b / x.shape[1] + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_polynomial_mmd_matches_the_definition_and_kid_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 6)), rng.normal(size=(7, 6)) + 0.5
    assert fidm.polynomial_mmd2(x, y) == pytest.approx(_mmd2_by_loops(x, y), rel=1e-10)
    same = fidm.kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)),
                                          num_subsets=20, subset_size=200)
    shifted = fidm.kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 1,
                                             num_subsets=20, subset_size=200)
    assert abs(same["mean"]) < 0.05 < shifted["mean"]
    assert same["subset_size"] == 200 and same["num_subsets"] == 20 and same["std"] >= 0
    with pytest.raises(DataError, match="at least 2"):
        fidm.kernel_inception_distance(x[:1], y)


def test_inception_score_of_known_predictions():
    assert fidm.inception_score(np.zeros((20, 10)), splits=2)["mean"] == pytest.approx(1.0)
    confident = np.full((40, 8), -50.0)
    confident[np.arange(40), np.arange(40) % 8] = 50.0  # sure of itself, every class equally often
    assert fidm.inception_score(confident, splits=5)["mean"] == pytest.approx(8.0, rel=1e-6)


# -- Inception features of image folders -----------------------------------------------------------
def _write_images(folder, seed, n=4, size=32):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None] % 1.0
        img = (c0 * (1 - t) + c1 * t + rng.normal(0, 8, (size, size, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    return _write_images(root / "a", 0), _write_images(root / "b", 1)


@pytest.fixture(scope="module")
def extractor():
    return fidm.InceptionFeatureExtractor(device="cpu", batch_size=8)


def test_preprocessing_is_pytorch_fids(extractor):
    img = torch.randint(0, 256, (3, 40, 24), dtype=torch.uint8)
    pytorch_fid = F.interpolate(img[None].float() / 255, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert torch.allclose(extractor.preprocess(img), pytorch_fid, atol=1e-5)
    assert extractor.sha1 == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    proto = extractor.protocol()
    assert proto["sha1"] == extractor.sha1 and "127.5" in proto["input_mapping"] and "bilinear" in proto["resize"]
    assert not extractor.has_logits  # so IS is reported unavailable, never faked


def test_quantize_equals_a_png_round_trip(tmp_path):
    from layout2img.visualize import to_pil

    x = torch.rand(3, 16, 16) * 2 - 1
    to_pil(x).save(tmp_path / "x.png")
    back = fidm.read_image_uint8(tmp_path / "x.png")
    assert torch.equal(back, fidm.to_uint8(x[None])[0])
    assert torch.allclose(fidm.quantize(x), back.float() / 127.5 - 1, atol=1e-6)


def test_project_fid_agrees_with_an_independent_eigenvalue_computation(folders, extractor):
    fa, fb = extractor.folder(folders[0]), extractor.folder(folders[1])
    assert fa.shape == fb.shape == (4, 2048) and np.isfinite(fa).all()

    # tr sqrt(Sa Sb) from the nonzero eigenvalues of (A B^T)(A B^T)^T, A and B the centred features
    a, b = fa - fa.mean(0), fb - fb.mean(0)
    m = a @ b.T / np.sqrt((len(a) - 1) * (len(b) - 1))
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(m @ m.T), 0, None)).sum()
    independent = (((fa.mean(0) - fb.mean(0)) ** 2).sum() + (a**2).sum() / (len(a) - 1)
                   + (b**2).sum() / (len(b) - 1) - 2 * tr_sqrt)
    ours = fidm.fid_from_features(fa, fb)
    assert ours > 1.0
    assert ours == pytest.approx(independent, rel=1e-6)


def test_folder_features_are_cached_by_content_and_recomputed_when_a_file_changes(folders, extractor, tmp_path,
                                                                                  monkeypatch):
    import shutil

    real = shutil.copytree(folders[0], tmp_path / "real")
    cache = tmp_path / "cache"
    first = extractor.folder(real, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 1

    calls = []
    monkeypatch.setattr(extractor, "net", lambda x: calls.append(x.shape[0]) or torch.zeros(x.shape[0], 2048))
    assert np.array_equal(extractor.folder(real, cache_dir=cache), first) and calls == []  # read back, no network

    shutil.copy(folders[1] / "000.png", real / "000.png")  # same names, other bytes: a new key
    changed = extractor.folder(real, cache_dir=cache)
    assert calls == [4] and not np.array_equal(changed, first)
    assert len(list(cache.glob("*.npy"))) == 2


def test_fid_command_of_a_folder_with_itself_is_zero(folders, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(folders[0], copy)  # another path: features computed twice
    assert main(["fid", str(folders[0]), str(copy), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    value = float(out.splitlines()[0].split(":")[1])
    assert abs(value) < 1e-4
    assert "4 vs 4 images" in err and "singular" in err


def test_fid_command_rejects_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["fid", str(tmp_path / "empty"), str(tmp_path / "empty"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and "no images" in err
