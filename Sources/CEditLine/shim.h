// libedit only (BSD licence): never GNU readline.
#include <stdio.h>
#include <histedit.h>
#include <editline/readline.h>
