"""The synthetic Soundtracks dataset (protocol §2.2): :mod:`~mer_lib.data.synth.model` (controls, labels),
:mod:`~mer_lib.data.synth.score` (notes), :mod:`~mer_lib.data.synth.render` (audio) and
:mod:`~mer_lib.data.synth.writer` (files in the real layout, :mod:`mer_lib.data.layout`).
"""
