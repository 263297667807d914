"""The commands, one module each (pretrain/ a package): add_arguments(parser), check_args(args), run(args).

core_eval, sft, chat_eval (steps 2-4), pretrain/ (step 1), and the tools that act on a whole dataset folder:
verify, download, upload. What each one is (name, folder, files) is declared in dataset/layout.py.
"""
