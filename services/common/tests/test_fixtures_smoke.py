import psycopg
import redis

from devstack.pytest_plugin import new_database


def test_private_postgres_accepts_connections(postgres_server):
    url = new_database(postgres_server).replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_private_redis_answers_ping(redis_url):
    assert redis.Redis.from_url(redis_url).ping()
