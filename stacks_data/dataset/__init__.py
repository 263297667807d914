"""The dataset folder: what is in it and the promises every step keeps about it.

layout (each step's name, sub-folder, files, locks and checks: the one table every tool reads), folder (the
locks and the staged publish of a sub-folder), manifest (each step's commit mark: written last), binfile (the
.bin format and the shard writer), files (atomic writes, hashed on the way). Nothing here knows a step's work.
"""
