"""The pull-request comment's body."""

from __future__ import annotations

#: The hidden marker by which model_tests_comment.yml finds its own comment.
MARKER = "<!-- mnist-arch-report -->"
