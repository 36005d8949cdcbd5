import numpy as np
import pytest

from mdw.data.noise import Noise, apply_noise, inject_noise, make_noise
from mdw.errors import ConfigError, DataError
from tests.helpers import tiny_pairset


@pytest.mark.parametrize("eta", [0.0, 0.2, 0.4, 0.6, 0.8, 0.95])
def test_exact_count_and_no_pair_keeps_its_image(eta):
    ps = tiny_pairset(n_images=60, captions_per_image=5)
    train = ps.pairs_in("train")
    noisy, noise = inject_noise(ps, eta, seed=3)
    k = int(np.floor(eta * len(train)))
    assert len(noise.pairs) == k == int(noisy.is_noisy.sum())
    # only training pairs are touched, each picked pair shows another image
    assert set(noise.pairs.tolist()) <= set(train.tolist())
    assert np.all(noisy.pair_image[noise.pairs] != noisy.true_image[noise.pairs])
    # the picked pairs' images are permuted among themselves (a permutation of the same multiset)
    assert sorted(noisy.pair_image[noise.pairs].tolist()) == sorted(ps.true_image[noise.pairs].tolist())
    # ground truth: noisy exactly where the shown image differs from the caption's own
    assert np.array_equal(noisy.is_noisy, noisy.pair_image != noisy.true_image)
    untouched = np.setdiff1d(np.arange(ps.n_pairs), noise.pairs)
    assert np.array_equal(noisy.pair_image[untouched], ps.true_image[untouched])


def test_same_seed_same_permutation_other_seed_differs():
    ps = tiny_pairset(n_images=60, captions_per_image=5)
    a, b, c = make_noise(ps, 0.4, 7), make_noise(ps, 0.4, 7), make_noise(ps, 0.4, 8)
    assert np.array_equal(a.pairs, b.pairs) and np.array_equal(a.images, b.images)
    assert not (np.array_equal(a.pairs, c.pairs) and np.array_equal(a.images, c.images))


def test_record_round_trip_reapplies_identically():
    ps = tiny_pairset()
    noisy, noise = inject_noise(ps, 0.5, 1)
    again = apply_noise(ps, Noise.from_dict(noise.to_dict()))
    assert np.array_equal(again.pair_image, noisy.pair_image)
    assert np.array_equal(again.is_noisy, noisy.is_noisy)


@pytest.mark.parametrize("eta", [-0.1, 1.0, 1.5])
def test_eta_out_of_range(eta):
    with pytest.raises(ConfigError, match=r"eta.*\[0, 1\)"):
        make_noise(tiny_pairset(), eta, 0)


def test_impossible_derangement_is_a_clear_error():
    ps = tiny_pairset(n_images=10, captions_per_image=1)
    with pytest.raises(DataError, match="cannot derange"):
        make_noise(ps, 0.15, 0)  # 7 training pairs -> 1 picked: nothing to swap with
