"""fastlstm called from several Python threads at once: the same bits as one call on the
main thread (the scratch buffers are per thread, the BLAS limit is one for the process,
a fitted model keeps no state that a prediction writes)."""

import threading
import warnings

import numpy as np
import pytest

import fastlstm as fl
from _helpers import make_case, make_cell


def _in_threads(fn, n_threads, repeats):
    """Run ``fn(k, i)`` for i < repeats in each of ``n_threads`` threads; the exceptions
    they raised."""
    errors = []

    def worker(k):
        try:
            for i in range(repeats):
                fn(k, i)
        except Exception as exc:             # noqa: BLE001  (reported by the test)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


# H = 40 and 130: the weight gradients' widths (4H) are not whole 64-column blocks, so
# they are BLAS products, whose bits depend on how many threads BLAS runs them on
SHAPES = [(9, 6, 28, 40), (9, 6, 28, 64), (5, 6, 28, 130)]


def _training_step(cell, x, lengths):
    out, _, cache = fl.dynamic_rnn(cell, x, lengths, backend="cython", return_cache=True)
    grads = fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
    return [out, grads["kernel"], grads["recurrent_kernel"], grads["bias"], grads["inputs"]]


def _cases():
    cases = []
    for B, T, I, H in SHAPES:
        cell = make_cell("lstm", H, I, dtype=np.float32, seed=H)
        x, lengths, _ = make_case(cell, B, T, seed=B)
        cases.append((cell, x, lengths, _training_step(cell, x, lengths)))
    return cases


def test_a_training_step_on_another_thread_gives_the_main_threads_bits():
    """OpenBLAS ignored the BLAS limit set off the main thread: a weight gradient there
    ran on two BLAS threads, with other bits (every call, 2e-5 apart)."""
    cases = _cases()
    results = {}

    def run(k, i):
        results[i] = [_training_step(cell, x, lengths) for cell, x, lengths, _ in cases]

    assert _in_threads(run, 1, 1) == []
    for (*_, want), got in zip(cases, results[0]):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_training_steps_in_concurrent_threads_give_the_main_threads_bits():
    """Four threads at once, each with its own kernel threads: the BLAS limit is held
    for the process while any of them computes (a limit per thread was undone by one
    thread while another still computed: 1-3 of 180 gradients differed)."""
    cases = _cases()
    mismatches = []

    def run(k, i):
        cell, x, lengths, want = cases[(k + i) % len(cases)]
        with fl.threads(1 + (k + i) % 2):
            got = _training_step(cell, x, lengths)
        if not all(np.array_equal(a, b) for a, b in zip(got, want)):
            mismatches.append((k, i))

    assert _in_threads(run, 4, 15) == []
    assert mismatches == []


def test_concurrent_predictions_of_one_model_match_its_serial_ones():
    """A model with an input projection folds it into the first layer per forward; the
    folded copy kept on the network and refreshed in place was read half-refreshed by
    the other threads (wrong probabilities in 54 of 120 calls)."""
    rng = np.random.default_rng(0)
    X = rng.random((60, 12, 10)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # max_iter: not converged
        clf = fl.LSTMClassifier(hidden_size=24, input_projection=16, max_iter=2,
                                random_state=0).fit(X, y)
    want = clf.predict_proba(X)
    wrong = []

    def run(k, i):
        if not np.array_equal(clf.predict_proba(X), want):
            wrong.append((k, i))

    assert _in_threads(run, 4, 20) == []
    assert wrong == []


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_concurrent_default_thread_fits_share_a_thread_choice_and_match_serial_ones():
    """Fits of one shape in several Python threads time their batches into one
    ThreadChooser (fastlstm._governor); whatever count each batch gets, every model is
    the serial one's, bit for bit."""
    rng = np.random.default_rng(1)
    X = rng.random((48, 7, 5)).astype(np.float32)
    y = rng.integers(0, 2, 48)
    kwargs = dict(hidden_size=12, max_iter=3, tol=0.0, batch_size=8, random_state=0)
    want = fl.LSTMClassifier(**kwargs).fit(X, y).network_.params
    different = []

    def run(k, i):
        got = fl.LSTMClassifier(**kwargs).fit(X, y).network_.params
        if any(not np.array_equal(got[name], p) for name, p in want.items()):
            different.append((k, i))

    assert _in_threads(run, 4, 3) == []
    assert different == []
