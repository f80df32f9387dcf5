/*
 * RFEVENTS_DB URL parsing (db_open does not connect): what is accepted,
 * and that bad URLs are refused with a message rather than guessed at.
 */
#include <string.h>

#include "db/db.h"
#include "tests/unit/t.h"

static const struct {
	int         line;
	const char *url;
	int         ok;
	const char *msg;     /* substring of the error, when refused */
} cases[] = {
	{ __LINE__, "mariadb://u:p@localhost/db?socket=/tmp/x.sock", 1, NULL },
	{ __LINE__, "mariadb://u:p@127.0.0.1:3306/rfevents", 1, NULL },
	{ __LINE__, "mysql://u@h/db", 1, NULL },
	{ __LINE__, "mariadb://u:p%40ss@h1:3311,h2:3312,h3:3313/db", 1, NULL },
	{ __LINE__, "mariadb://h/db", 1, NULL },
	{ __LINE__, "mariadb:///db", 1, NULL },
	{ __LINE__, "postgres://u@h/db", 0, "mariadb://" },
	{ __LINE__, "", 0, "not set" },
	{ __LINE__, "mariadb://u@h", 0, "/database" },
	{ __LINE__, "mariadb://u@h/", 0, "empty database" },
	{ __LINE__, "mariadb://u@h:0/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u@h:65536/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u@h:12x/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u@:3306/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u:p%zz@h/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u:p%00@h/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u@h/db?sslmode=on", 0, "unknown option" },
	{ __LINE__, "mariadb://u@a,b,c,d,e,f,g,h,i/db", 0, "more than" },
};

int
main(void)
{
	size_t i;

	t_file = "test_db";
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char       err[256] = "";
		struct db *db = db_open(cases[i].url, err, sizeof(err));
		T_CHECK(cases[i].line, (db != NULL) == cases[i].ok, "%s: %s",
		    cases[i].url, db ? "accepted" : err);
		if (cases[i].msg != NULL)
			T_CHECK(cases[i].line, strstr(err, cases[i].msg) != NULL,
			    "message '%s' lacks '%s'", err, cases[i].msg);
		db_close(db);
	}
	T_OK(db_open(NULL, (char[64]){0}, 64) == NULL, "NULL URL accepted");
	return t_done();
}
