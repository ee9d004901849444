"""BasicMotions (UEA): 4 activities from 6 accelerometer and gyroscope channels, 100 time
points, as aeon holds it, (n_cases, n_channels, n_timepoints): layout="nft".

A Pipeline (SequenceScaler + LSTMClassifier) tuned by GridSearchCV on the training split,
scored on the official test split. aeon ships the data: nothing is downloaded.

    python examples/aeon_basic_motions.py
"""

import warnings

from aeon.datasets import load_basic_motions
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from fastlstm import LSTMClassifier, SequenceScaler


def main():
    X_train, y_train = load_basic_motions(split="train")    # (40, 6, 100)
    X_test, y_test = load_basic_motions(split="test")
    pipe = make_pipeline(
        SequenceScaler(layout="nft"),
        LSTMClassifier(layout="nft", hidden_size=32, batch_size=4, max_iter=60,
                       random_state=0))
    grid = {"lstmclassifier__readout": ["last", "mean"]}
    search = GridSearchCV(pipe, grid, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # max_iter reached in some folds
        search.fit(X_train, y_train)
    accuracy = search.score(X_test, y_test)
    print(f"BasicMotions: best {search.best_params_}, cv {search.best_score_:.3f}, "
          f"test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
