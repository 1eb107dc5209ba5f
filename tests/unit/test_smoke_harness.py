from portal.models import User


def test_db_fixture_rolls_back(db, make_user):
    make_user("manager", email="rollback@example.org")
    db.session.commit()
    assert db.session.scalar(db.select(User).where(User.email == "rollback@example.org"))


def test_previous_test_left_nothing(db):
    assert db.session.scalar(db.select(User).where(User.email == "rollback@example.org")) is None
