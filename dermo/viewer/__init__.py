"""The viewer: a local web page that shows what a model sees (python -m dermo.viewer, docs/method.md §9).

    members   the run(s) or model files behind it, each through its own dermo.predict.Predictor; soft vote
    evalset   an evaluation folder's predictions.csv as a table whose rows open the per-image view
    render    one image's prediction as JSON numbers and pictures (original, preprocessed, contour, CAMs)
    app       what the viewer answers, free of HTTP;  problems: its errors and their HTTP statuses
    server    Python's threading HTTP server: static/ (one page) and a small JSON API;  cli: the command

May import dermo.evaluation and below.
"""
