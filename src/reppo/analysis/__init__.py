"""Analysis of run directories: aggregate statistics with bootstrap intervals, curves, reports."""
