"""Child process of tests: import buildings, then Keras; print the Keras backend and KERAS_BACKEND."""

import os

import buildings  # noqa: F401  (sets the default backend; imported before Keras on purpose)

if __name__ == "__main__":
    import keras

    print(keras.backend.backend(), os.environ["KERAS_BACKEND"])
