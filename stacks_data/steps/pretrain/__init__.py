"""Step 1: train the tokenizer, report on it, and pre-tokenize the corpus into resumable .bin shards.

step (the command, top to bottom, and its frozen Settings), resume (the resume state: step 1's promise of
resume, never mixed, a changed input rolls back, in one place), pretokenize (the hot path: workers encode row
groups, the driver packs shards), tokenizer_report (the comparison with GPT-2 / GPT-4 and the plot).
"""
