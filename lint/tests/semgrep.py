# Annotated cases for lint/semgrep.yml, checked by `semgrep --test` (run by `make lint`).
# A "ruleid" comment means the next line must be reported by that rule; an "ok" comment means it
# must not be.
# This file is never imported or run.
import flask
import markupsafe
from flask import Flask, Markup, redirect, request, session, url_for
from flask_login import login_user
from markupsafe import Markup as SafeMarkup
from sqlalchemy import select, text

app = Flask(__name__)


# --- sql-built-from-string ------------------------------------------------------------------

def sql_cases(db, cursor, connection, name, table, user_id, User):
    # ruleid: sql-built-from-string
    db.session.execute(text(f"SELECT * FROM user WHERE name = '{name}'"))
    # ruleid: sql-built-from-string
    db.session.execute(text("SELECT * FROM user WHERE name = '%s'" % name))
    # ruleid: sql-built-from-string
    db.session.execute(text("SELECT * FROM user WHERE name = '" + name + "'"))
    # ruleid: sql-built-from-string
    db.session.execute(text("SELECT * FROM {} WHERE id = 1".format(table)))
    # ruleid: sql-built-from-string
    cursor.execute(f"DELETE FROM user WHERE id = {user_id}")
    # ruleid: sql-built-from-string
    cursor.execute("DELETE FROM user WHERE id = %s" % user_id)
    # ruleid: sql-built-from-string
    cursor.executemany("INSERT INTO " + table + " VALUES (?)", [(1,), (2,)])
    # ruleid: sql-built-from-string
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {user_id}")
    # ruleid: sql-built-from-string
    connection.exec_driver_sql("SELECT {} FROM user".format(name))
    query = f"SELECT * FROM user WHERE name = '{name}'"
    # ruleid: sql-built-from-string
    cursor.execute(query)
    where = "SELECT * FROM user WHERE 1 = 1"
    where += " AND name = '%s'" % name
    # ruleid: sql-built-from-string
    db.session.execute(text(where))

    # ok: sql-built-from-string
    db.session.execute(text("SELECT * FROM user WHERE name = :name"), {"name": name})
    # ok: sql-built-from-string
    cursor.execute("DELETE FROM user WHERE id = ?", (user_id,))
    # ok: sql-built-from-string
    connection.exec_driver_sql("BEGIN IMMEDIATE")
    # ok: sql-built-from-string
    db.session.execute(select(User).where(User.name.like(f"%{name}%")))
    # ok: sql-built-from-string
    cursor.execute("PRAGMA foreign_keys = ON")
    bound = text("SELECT * FROM user WHERE id = :id").bindparams(id=user_id)
    # ok: sql-built-from-string
    db.session.execute(bound)


# --- markup-call ----------------------------------------------------------------------------

def markup_cases(name):
    # ruleid: markup-call
    a = Markup(f"<b>{name}</b>")
    # ruleid: markup-call
    b = markupsafe.Markup("<b>" + name + "</b>")
    # ruleid: markup-call
    c = SafeMarkup(name)
    # ok: markup-call
    d = markupsafe.escape(name)
    return a, b, c, d


# --- redirect-to-request-value --------------------------------------------------------------

@app.route("/open-redirects")
def redirect_cases():
    if request.method == "GET":
        # ruleid: redirect-to-request-value
        return redirect(request.args.get("next"))
    if request.headers.get("X-A"):
        # ruleid: redirect-to-request-value
        return redirect(request.args["next"])
    if request.headers.get("X-B"):
        # ruleid: redirect-to-request-value
        return redirect(request.form.get("next") or url_for("index"))
    if request.headers.get("X-C"):
        # ruleid: redirect-to-request-value
        return flask.redirect(flask.request.values.get("next", "/"), code=303)
    if request.headers.get("X-D"):
        # ruleid: redirect-to-request-value
        return redirect(request.form["next"])
    # ok: redirect-to-request-value
    return redirect(url_for("index", page=request.args.get("page")))


# --- debug-enabled --------------------------------------------------------------------------

class DevelopmentConfig:
    # ruleid: debug-enabled
    DEBUG = True


class ProductionConfig:
    # ok: debug-enabled
    DEBUG = False


def debug_cases():
    # ruleid: debug-enabled
    app.debug = True
    # ruleid: debug-enabled
    app.config["DEBUG"] = True
    # ruleid: debug-enabled
    app.config.update(TESTING=True, DEBUG=True)
    # ruleid: debug-enabled
    app.run(host="127.0.0.1", debug=True)
    # ok: debug-enabled
    app.run(host="127.0.0.1", port=5000)
    # ok: debug-enabled
    app.run(debug=False)


# --- login-without-session-clear ------------------------------------------------------------

def login_without_clear(user):
    session["cart"] = "kept"
    # ruleid: login-without-session-clear
    login_user(user)


def login_then_clear(user):
    # ruleid: login-without-session-clear
    login_user(user)
    session.clear()


def login_with_clear(user):
    session.clear()
    # ok: login-without-session-clear
    login_user(user)
    session.permanent = True


def login_with_qualified_clear(user):
    flask.session.clear()
    # ok: login-without-session-clear
    login_user(user)


def login_with_clear_then_branch(user, remember):
    started = session.get("login_at")
    session.clear()
    if remember:
        # ok: login-without-session-clear
        login_user(user, remember=True)
    else:
        # ok: login-without-session-clear
        login_user(user)
    session["login_at"] = started


def login_with_clear_in_another_function(user):
    # ruleid: login-without-session-clear
    login_user(user)


def clear_only():
    session.clear()
