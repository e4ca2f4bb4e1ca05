"""The classifier base of every model in the zoo: the training models (``Res2Net``, ``Res2NetDLA``)
and their inference-optimised versions (``models/inference.py``).

A model lists its stages in ``feature_stages``: one tuple of attribute names per feature map, the
cells applied in that order. From that list the base gives

- ``forward_features(x)``: every stage, in order: the last feature map (``[B, num_features, H, W]``);
- ``forward_feature_maps(x)``: the output of each stage, filtered by ``out_indices``;
- ``forward_head(x, pre_logits=False)``: global pool, dropout, classifier (the parts from
  ``build_head``);
- ``construct(x)``: the feature maps with ``features_only``, else the head over the last map.

The names are looked up with ``getattr`` on constant strings, which graph mode resolves while
compiling, so the compiled graph is the same as hand-written calls.
"""
from mindspore import nn

from .layers import build_head


class ClassifierNet(nn.Cell):
    """Base of the zoo's models. A subclass sets ``feature_stages``, builds its cells, then calls
    ``init_head`` (last, so that the classifier's parameters come after the backbone's)."""

    feature_stages = ()

    def init_head(self, num_features, feature_info, num_classes=1000, global_pool="avg", drop_rate=0.0,
                  features_only=False, out_indices=None):
        """Set ``num_features``, ``feature_info`` and ``out_indices`` and, unless ``features_only``,
        the head: ``global_pool``, ``head_drop`` (or None), ``classifier`` (None with
        ``num_classes=0``) and ``num_pooled_features``.

        ``feature_info`` has one entry per stage; with ``features_only`` it keeps those selected by
        ``out_indices`` (default: all), without it ``out_indices`` is empty.
        """
        self.num_classes = num_classes
        self.features_only = features_only
        self.num_features = num_features
        if features_only:
            self.out_indices = tuple(range(len(feature_info))) if out_indices is None else tuple(out_indices)
            self.feature_info = [feature_info[i] for i in self.out_indices]
            self.global_pool, self.head_drop, self.classifier = None, None, None
        else:
            self.out_indices = ()
            self.feature_info = feature_info
            self.global_pool, self.head_drop, self.classifier, self.num_pooled_features = build_head(
                num_features, num_classes, global_pool, drop_rate)

    def forward_features(self, x):
        """The last feature map: every stage of ``feature_stages`` in order."""
        for stage in self.feature_stages:
            for name in stage:
                x = getattr(self, name)(x)
        return x

    def forward_feature_maps(self, x):
        """The output of each stage of ``feature_stages``, filtered by ``out_indices``."""
        maps = ()
        for stage in self.feature_stages:
            for name in stage:
                x = getattr(self, name)(x)
            maps = maps + (x,)
        return tuple(maps[i] for i in self.out_indices)

    def forward_head(self, x, pre_logits=False):
        """Global pool, dropout (training only) and classifier; ``pre_logits``: the pooled features."""
        x = self.global_pool(x)
        if self.head_drop is not None:
            x = self.head_drop(x)
        if pre_logits or self.classifier is None:
            return x
        return self.classifier(x)

    def construct(self, x):
        if self.features_only:
            return self.forward_feature_maps(x)
        return self.forward_head(self.forward_features(x))


__all__ = ["ClassifierNet"]
