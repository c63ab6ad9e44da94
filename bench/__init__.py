"""``make bench``: Siaga 112 (siaga_pbx over ARI) against Asterisk's own app_queue, side by side.

See docs/PERFORMANCE.md for what is measured, how, and the latest results.
"""
