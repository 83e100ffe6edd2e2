"""A Redis restart is invisible to a user of the API.

Redis restarts quickly (same port, AOF reloaded) while the platform sits idle; every
connection the services and the gateway's workers held is dead. The next requests, the very
first ones included, are answered as before: reading templates (gateway and approval), the
user's VMs and tokens (gateway), a new request (approval's transaction), none of them 503.
"""

import unittest

import berth_test


class RedisRestart(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.p = berth_test.Platform()
        try:
            cls.p.start_all(agents=1)
        except BaseException:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.p.stop()

    def test_first_requests_after_restart_succeed(self):
        api = berth_test.Api(self.p)
        # Enough requests that every gateway worker has used its own connection.
        for _ in range(40):
            self.assertEqual(api.call("GET", "/v1/templates").status, 200)
            self.assertEqual(api.call("GET", "/v1/vms").status, 200)

        self.p.stop_redis()
        self.p.start_redis()
        statuses = []
        for _ in range(40):
            statuses.append(("templates", api.call("GET", "/v1/templates").status))
            statuses.append(("vms", api.call("GET", "/v1/vms").status))
        bad = [s for s in statuses if s[1] != 200]
        self.assertEqual(bad, [], "answers other than 200 right after the restart")
        r = api.call("POST", "/v1/requests", {"template": "small", "name": "after-restart"})
        self.assertEqual(r.status, 202, r)
        r = self.p.http("POST", "/v1/auth/tokens",
                        {"username": self.p.admin_user, "password": self.p.admin_password})
        self.assertEqual(r.status, 201, r)


if __name__ == "__main__":
    unittest.main()
