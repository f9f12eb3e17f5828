"""The respondent's page (dashboard/respondent.py), opened by a signed link."""

from respondent import respondent_home

respondent_home()
