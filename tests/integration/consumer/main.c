/* A program that uses an installed weft, found through pkg-config or CMake. */
#include <stdio.h>
#include <weft.h>

int main(void)
{
	double capacity;
	int cpus = weft_cpu_budget(&capacity);
	if (cpus < 1 || capacity <= 0) {
		fprintf(stderr, "weft_cpu_budget: %s\n", weft_strerror(cpus));
		return 1;
	}
	printf("weft %s cpus=%d\n", weft_version(), cpus);
	return 0;
}
