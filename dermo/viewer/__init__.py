"""The viewer: a local web page that shows what a model sees (dermo view, docs/method.md §9).

    members   the run(s) or model files behind it, each through its own dermo.predict.Predictor; soft vote
    evalset   an evaluation folder's predictions.csv as a table whose rows open the per-image view
    render    one image's prediction as JSON numbers and pictures (original, preprocessed, contour, CAMs)
    app       what the viewer answers, free of HTTP;  problems: its errors and their HTTP statuses
    server    Python's threading HTTP server: static/ (one page) and a small JSON API;  cli: the command

Python's own http.server rather than Gradio: the page is one static file and the API five routes, while Gradio
would add about 170 MB in 35 packages and 2-3 s of import to the start-up.

May import dermo.experiments (cross-validation folders), dermo.evaluation and below.
"""
