"""Reading the inputs, with errors that name file and row: parquet files, the pretraining corpora and their
shards, the SFT conversation sources and the multiple-choice datasets. No step's outputs are written here."""
