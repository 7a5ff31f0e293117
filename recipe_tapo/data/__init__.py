"""Training and benchmark data in verl's row format.

`rows` fixes the prompt (one suffix asking for `\\boxed{}`) and the row layout shared by every file;
`sources` is the table of supported datasets (hub name, splits, column names); `prepare` is the
command line that loads a source from the hub or a local file, converts it and writes parquet.
"""
