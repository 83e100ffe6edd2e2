#!/usr/bin/env python3
"""The permission table against the route table and the docs, with no server running: every
route names an action of the table, every action of the table is named by a route, and
docs/permissions.md is what the tables generate.

Run: python3 tests/integration/test_permissions.py [--write (regenerate docs/permissions.md)]
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import permtable  # noqa: E402

DOC = os.path.join(permtable.ROOT, "docs", "permissions.md")


class Permissions(unittest.TestCase):
    def test_tables_read(self):
        self.assertGreater(len(permtable.table()), 10)
        self.assertGreater(len(permtable.routes()), 10)

    def test_every_route_names_an_action_of_the_table(self):
        actions = permtable.table()
        for method, pattern, action in permtable.routes():
            self.assertIn(action, actions, "%s %s" % (method, pattern))

    def test_every_action_is_used(self):
        used = {a for _m, _p, a in permtable.routes()}
        self.assertEqual(set(permtable.table()) - used, set())

    def test_rules_are_sane(self):
        for action, (bits, _what) in permtable.table().items():
            self.assertTrue(bits, action)
            # A public action has nothing else to say; nothing but admin changes groups.
            if "PUBLIC" in bits:
                self.assertEqual(bits, {"PUBLIC"}, action)
        t = permtable.table()
        self.assertEqual(t["group.create"][0], {"ADMIN"})
        self.assertNotIn("OPERATOR", t["request.approve"][0])  # operators approve nothing

    def test_docs_are_generated_from_the_tables(self):
        with open(DOC) as f:
            self.assertEqual(f.read(), permtable.markdown(),
                             "docs/permissions.md is stale: run this test with --write")


if __name__ == "__main__":
    if "--write" in sys.argv:
        with open(DOC, "w") as f:
            f.write(permtable.markdown())
        sys.exit(0)
    unittest.main()
