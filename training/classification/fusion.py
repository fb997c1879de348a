"""scikit-learn building blocks for radiomics/deep fusion; every step is fitted inside CV folds only."""

from __future__ import annotations

import numpy as np
from scipy.stats import mannwhitneyu, spearmanr
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, StackingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

SEED = 7
PCA_COMPONENTS = 32


class RadiomicsSelector(BaseEstimator, TransformerMixin):
    """Mann-Whitney U filter -> Spearman redundancy pruning -> LASSO (L1 logistic) selection."""

    def __init__(self, alpha: float = 0.05, rho: float = 0.9, lasso_c: float = 0.1, min_keep: int = 5) -> None:
        self.alpha, self.rho, self.lasso_c, self.min_keep = alpha, rho, lasso_c, min_keep

    def fit(self, X, y):
        X, y = np.asarray(X, float), np.asarray(y)
        p = np.array([mannwhitneyu(X[y == 1, j], X[y == 0, j]).pvalue if X[:, j].std() > 0 else 1.0
                      for j in range(X.shape[1])])
        order = [j for j in np.argsort(p) if p[j] < self.alpha] or list(np.argsort(p)[: self.min_keep])
        rho = np.abs(spearmanr(X[:, order]).statistic) if len(order) > 1 else np.ones((1, 1))
        rho = np.atleast_2d(rho)
        kept: list[int] = []
        for a in range(len(order)):  # keep the most significant of each correlated cluster
            if all(rho[a, b] < self.rho for b in kept):
                kept.append(a)
        cand = [order[a] for a in kept]
        Z = StandardScaler().fit_transform(X[:, cand])
        lasso = LogisticRegression(penalty="l1", C=self.lasso_c, solver="liblinear", max_iter=5000)
        coef = np.abs(lasso.fit(Z, y).coef_[0])
        chosen = [cand[i] for i in np.argsort(-coef) if coef[i] > 0]
        if len(chosen) < self.min_keep:
            chosen = [cand[i] for i in np.argsort(-coef)[: self.min_keep]]
        self.selected_ = np.array(sorted(chosen))
        return self

    def transform(self, X):
        return np.asarray(X, float)[:, self.selected_]


def radiomics_branch(n_rad: int) -> tuple:
    return ("rad", Pipeline([("select", RadiomicsSelector()), ("scale", StandardScaler())]), slice(0, n_rad))


def deep_branch(n_rad: int, n_total: int) -> tuple:
    return ("deep", Pipeline([("scale", StandardScaler()), ("pca", PCA(PCA_COMPONENTS, random_state=SEED))]),
            slice(n_rad, n_total))


def classifiers() -> dict:
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    return {
        "LR": LogisticRegression(C=0.5, max_iter=5000),
        "SVM": SVC(C=1.0, kernel="rbf", probability=True, random_state=SEED),
        "KNN": KNeighborsClassifier(n_neighbors=15, weights="distance"),
        "RF": RandomForestClassifier(n_estimators=400, min_samples_leaf=2, random_state=SEED, n_jobs=1),
        "ET": ExtraTreesClassifier(n_estimators=400, min_samples_leaf=2, random_state=SEED, n_jobs=1),
        "XGB": XGBClassifier(n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8,
                             colsample_bytree=0.5, random_state=SEED, n_jobs=1, verbosity=0),
        "LGBM": LGBMClassifier(n_estimators=300, num_leaves=15, learning_rate=0.05, subsample=0.8,
                               subsample_freq=1, colsample_bytree=0.5, random_state=SEED, n_jobs=1, verbose=-1),
    }


def single(branches: list, clf) -> Pipeline:
    return Pipeline([("features", ColumnTransformer(branches)), ("clf", clone(clf))])


class LateFusion(BaseEstimator, ClassifierMixin):
    """Soft vote of a radiomics and a deep model, weighted by their accuracy on an inner group hold-out."""

    def __init__(self, rad_model=None, deep_model=None, groups=None) -> None:
        self.rad_model, self.deep_model, self.groups = rad_model, deep_model, groups

    def fit(self, X, y, groups=None):
        y = np.asarray(y)
        g = groups if groups is not None else np.arange(len(y))
        tr, ho = next(GroupKFold(n_splits=5).split(X, y, g))
        acc = []
        for m in (self.rad_model, self.deep_model):
            probe = clone(m).fit(X[tr], y[tr])
            acc.append(float(((probe.predict_proba(X[ho])[:, 1] >= 0.5) == y[ho]).mean()))
        self.weights_ = np.array(acc) / sum(acc)
        self.members_ = [clone(self.rad_model).fit(X, y), clone(self.deep_model).fit(X, y)]
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = sum(w * m.predict_proba(X)[:, 1] for w, m in zip(self.weights_, self.members_))
        return np.column_stack([1 - p, p])


def build(mode: str, clf, n_rad: int, n_total: int, groups=None):
    rad, deep = radiomics_branch(n_rad), deep_branch(n_rad, n_total)
    if mode == "radiomics":
        return single([rad], clf)
    if mode == "deep":
        return single([deep], clf)
    if mode == "early":
        return single([rad, deep], clf)
    if mode == "late":
        return LateFusion(single([rad], clf), single([deep], clf))
    if mode == "stacking":
        cv = list(GroupKFold(n_splits=5).split(np.zeros(len(groups)), None, groups))
        return StackingClassifier([("rad", single([rad], clf)), ("deep", single([deep], clf))],
                                  final_estimator=LogisticRegression(), cv=cv, stack_method="predict_proba")
    raise ValueError(mode)


MODES = ("radiomics", "deep", "early", "late", "stacking")
