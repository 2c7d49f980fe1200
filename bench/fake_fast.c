/* Benchmark child: stamps its start, reads the prompt, prints BENCH_MB of stream-json, signals at
 * once (continue -> implementation), stamps its end. A C program so that its own start-up (well
 * under a millisecond) does not hide the worker's overhead. BENCH_LATENCY=S prints a timestamped
 * probe line and then stays quiet for S seconds. The session folder is BENCH_SESSION, else the
 * prompt's "- Session Dir:" line. With BENCH_STOP=N the Nth child (counted in BENCH_STAMPS) signals
 * blocked instead, which ends samocode (exit 4) and the upstream worker (exit 0) alike. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static double now(void) { struct timeval tv; gettimeofday(&tv, NULL); return tv.tv_sec + tv.tv_usec / 1e6; }

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) { ssize_t n = write(fd, buf, len); if (n <= 0) exit(3); buf += n; len -= (size_t)n; }
}

int main(void) {
    double start = now();
    size_t cap = 1 << 20, len = 0; char *prompt = malloc(cap); ssize_t n;
    while ((n = read(0, prompt + len, cap - len - 1)) > 0) { len += (size_t)n; if (cap - len < 4096) prompt = realloc(prompt, cap *= 2); }
    prompt[len] = 0;
    char session[4096] = ""; char *p = strstr(prompt, "\n- Session Dir: ");
    if (p) { p += 16; size_t i = 0; while (p[i] && p[i] != '\n' && i < sizeof session - 1) { session[i] = p[i]; i++; } session[i] = 0; }
    if (getenv("BENCH_SESSION")) snprintf(session, sizeof session, "%s", getenv("BENCH_SESSION"));
    int done_before = 0;
    if (getenv("BENCH_STOP")) {
        FILE *s = fopen(getenv("BENCH_STAMPS"), "r"); int c;
        if (s) { while ((c = fgetc(s)) != EOF) done_before += c == '\n'; fclose(s); }
    }
    int last = getenv("BENCH_STOP") && done_before + 1 >= atoi(getenv("BENCH_STOP"));
    double mb = getenv("BENCH_MB") ? atof(getenv("BENCH_MB")) : 0;
    static char line[1100]; memcpy(line, "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"", 62);
    memset(line + 62, 'x', 1000); memcpy(line + 1062, "\"}]}}\n", 6); size_t ll = 1068;
    static char chunk[1068 * 64]; for (int i = 0; i < 64; i++) memcpy(chunk + i * ll, line, ll);
    size_t remaining = (size_t)(mb * 1024 * 1024);
    while (remaining > 0) { size_t k = remaining < sizeof chunk ? remaining : sizeof chunk; write_all(1, chunk, k); remaining -= k; }
    if (getenv("BENCH_LATENCY")) {
        char probe[200]; int k = snprintf(probe, sizeof probe, "{\"type\":\"system\",\"subtype\":\"probe\",\"t\":%.6f}\n", now());
        write_all(1, probe, (size_t)k); usleep((useconds_t)(atof(getenv("BENCH_LATENCY")) * 1e6));
    }
    double printed = now();
    char path[4200]; snprintf(path, sizeof path, "%s/bench-notes.md", session);
    FILE *f = fopen(path, "a"); if (!f) return 4;  /* progress, so the stall breaker stays quiet */
    fprintf(f, "- iteration at %.6f\n", start); fclose(f);
    snprintf(path, sizeof path, "%s/_signal.json", session);
    f = fopen(path, "w"); if (!f) return 4;
    fputs(last ? "{\"status\": \"blocked\", \"reason\": \"bench over\", \"needs\": \"human_decision\"}"
               : "{\"status\": \"continue\", \"phase\": \"implementation\", \"summary\": \"bench\"}", f);
    fclose(f);
    const char *result = "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"num_turns\":1,"
                         "\"total_cost_usd\":0.001,\"usage\":{\"input_tokens\":10,\"output_tokens\":5}}\n";
    write_all(1, result, strlen(result));
    double end = now();
    f = fopen(getenv("BENCH_STAMPS"), "a"); if (!f) return 5;
    fprintf(f, "%.6f %.6f %zu %.6f\n", start, end, (size_t)(mb * 1024 * 1024), printed); fclose(f);
    return 0;
}
