"""JapaneseVowels (UEA): 9 speakers from 12 LPC cepstrum channels, 7 to 29 frames per
utterance, as aeon holds unequal-length data: a list of (n_channels, n_timepoints_i)
arrays, layout="nft". No padding is computed.

A Pipeline (SequenceScaler + bidirectional LSTMClassifier) tuned by GridSearchCV on the
training split, scored on the official test split. aeon ships the data.

    python examples/aeon_japanese_vowels.py
"""

import warnings

from aeon.datasets import load_japanese_vowels
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from fastlstm import LSTMClassifier, SequenceScaler


def main():
    X_train, y_train = load_japanese_vowels(split="train")   # 270 arrays (12, T_i)
    X_test, y_test = load_japanese_vowels(split="test")
    pipe = make_pipeline(
        SequenceScaler(layout="nft"),
        LSTMClassifier(layout="nft", hidden_size=64, bidirectional=True, batch_size=16,
                       max_iter=30, random_state=0))
    grid = {"lstmclassifier__alpha": [0.0, 1e-3]}
    search = GridSearchCV(pipe, grid, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X_train, y_train)
    accuracy = search.score(X_test, y_test)
    print(f"JapaneseVowels: best {search.best_params_}, cv {search.best_score_:.3f}, "
          f"test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
