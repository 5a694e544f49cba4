"""The synthetic Soundtracks dataset (protocol §2.2).

:mod:`~mer_lib.data.synth.model` draws the controls and derives the labels,
:mod:`~mer_lib.data.synth.score` composes the notes,
:mod:`~mer_lib.data.synth.render` synthesises the audio and
:mod:`~mer_lib.data.synth.writer` writes the dataset in the real datasets'
file formats (:mod:`mer_lib.data.layout`).
"""
