"""`breastcadx serve`: the radiologist's workflow in a browser, on real Slicer views (trame-slicer).

access.py: what the server may read, where it may write, who may connect; session.py: page actions on the shared
scene logic (scene.logic.WorkflowLogic, the same as the desktop panel); page.py: the trame page, thin.
"""
