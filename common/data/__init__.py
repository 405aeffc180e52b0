"""Data tools shared by every dataset: data lists and folds, the data check, the dataset fingerprint."""
