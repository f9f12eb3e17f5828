"""ferpipe dashboard: who may see what, then navigation; each page lives in views/ (a folder named pages/ would make
Streamlit list its files as pages of their own when a page is opened by its link).

- A respondent's signed link (?link=) gets their panel page and nothing else: no other page is in its navigation.
- Where researcher accounts exist (`ferpipe users add`), every researcher page needs a signed-in session (the cookie
  /ferpipe/login sets); with single sign-on configured (FERPIPE_SSO_SECRETS: Streamlit's [auth] section) a session
  signed in by the identity provider (st.login) serves too. Without either the dashboard serves its one local user
  on 127.0.0.1 only (`ferpipe dashboard` refuses any other address).
"""

import streamlit as st


def main() -> None:
    from common import store
    from respondent import respondent_home

    from ferpipe.access import SESSION_COOKIE, session_user, signin_configured, sso_allowed, sso_provider, sso_secrets

    st.set_page_config(page_title="ferpipe", page_icon=":material/mood:", layout="wide")
    s = store()
    if st.query_params.get("link"):  # a respondent: their panel only
        st.navigation([st.Page(respondent_home, title="Study panel", default=True),
                       st.Page("views/respond.py", title="Study panel ", url_path="panel")], position="hidden").run()  # fmt: skip
        return
    accounts, sso = signin_configured(s), sso_secrets() is not None
    user = session_user(s.path, st.context.cookies.get(SESSION_COOKIE)) if accounts else None
    via_sso = False
    if user is None and sso and st.user.is_logged_in:  # signed in by the institution's identity provider
        who = str(st.user.get("email") or st.user.get("name") or st.user.get("sub") or "")
        if not sso_allowed(who):
            st.title("ferpipe")
            st.error(f"{who or 'This account'} may not use this dashboard (FERPIPE_SSO_ALLOWED).")
            st.button("Sign out", on_click=st.logout)
            return
        user, via_sso = who, True
        if not st.session_state.get("sso_audited"):
            s.audit("sign-in", who=user, detail="single sign-on")
            st.session_state["sso_audited"] = True
    if (accounts or sso) and user is None:
        st.title("ferpipe")
        st.write("This dashboard holds recordings of people's faces: researchers sign in first.")
        if sso:
            provider = sso_provider()
            st.button("Sign in with single sign-on", type="primary",
                      on_click=(lambda: st.login(provider)) if provider else st.login)  # fmt: skip
        if accounts:
            st.link_button("Sign in with a ferpipe account", "/ferpipe/login", type="secondary" if sso else "primary")
        return

    st.sidebar.markdown("### ferpipe\nAudience expression analytics")
    st.session_state["signed_in_user"] = user  # who the audit log names for this session's exports and deletions
    if user:
        st.sidebar.caption(f"Signed in as {user}")
        if via_sso:
            st.sidebar.button("Sign out", on_click=st.logout)
        else:
            st.sidebar.link_button("Sign out", "/ferpipe/logout")
    st.sidebar.radio("Chart downloads", ["png", "svg"], key="chart_format", horizontal=True,
                     help="The camera icon above each chart saves it in this format.")  # fmt: skip

    st.navigation(
        [
            st.Page("views/library.py", title="Library", icon=":material/video_library:", default=True),
            st.Page("views/clip.py", title="Clip view", icon=":material/show_chart:"),
            st.Page("views/people.py", title="People", icon=":material/groups:"),
            st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
            st.Page("views/panel.py", title="Webcam panel", icon=":material/videocam:", url_path="panel"),
            st.Page("views/export.py", title="Export", icon=":material/download:"),
            st.Page("views/models.py", title="Models", icon=":material/model_training:"),
        ]
    ).run()


if __name__ != "__mp_main__":  # a process pool's worker re-reading the main script (multiprocessing spawn) runs nothing
    main()
