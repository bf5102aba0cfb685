"""tinygpt: GPT-2 from scratch on a small hand-derived autograd engine."""
