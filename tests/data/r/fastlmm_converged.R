# lme4 fits driven to convergence, for tests/test_fastlmm_converged.py and benchmarks/bench_lmm.py.
#
# lme4's default optimiser (and BOBYQA with rhoend = 1e-12) is derivative-free and stops where the REML
# criterion is flat to about 1e-13 relative, 3e-6 to 3e-5 (relative) short of the optimum on variance
# components of large studies. This script fits each model four ways and keeps every result with its REML
# criterion, so the caller can see which optimum is better:
#   bobyqa        BOBYQA, rhoend = 1e-12, maxfun = 1e5
#   nlopt         nloptwrap (NLopt BOBYQA), xtol_rel = 1e-12, ftol_rel = 1e-15, maxeval = 1e5
#   restart       nlopt again, started from the better of the two optima above (lme4 restarted from its own optimum)
#   newton        Newton steps on lme4's own deviance function (devFunOnly) from the best optimum so far, with
#                 lme4's finite-difference gradient and Hessian (lme4:::deriv12; zero variances stay at zero),
#                 accepted only while the criterion decreases; then evaluated at that theta (optimizer = NULL)
#   at_fast       lme4 evaluated at the fast engine's theta (optimizer = NULL), when a theta is given
# and records lme4's own finite-difference gradient and Hessian of the criterion at each optimum.
#
# Usage (repository root): Rscript tests/data/r/fastlmm_converged.R JOBS.csv OUT.csv
#   JOBS.csv columns: name, file, formula, reml (TRUE/FALSE), theta (fast theta in lme4 order, space separated, or "")
# The committed fixture tests/data/r/fastlmm_converged.csv was made with
#   .venv/bin/python tests/data/r/fastlmm_make_converged.py
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
jobs <- read.csv(args[1], stringsAsFactors = FALSE)
out <- list()
add <- function(job, fit, quantity, names, values) {
  out[[length(out) + 1]] <<- data.frame(model = job, fit = fit, quantity = quantity, name = names,
                                        value = sprintf("%.17g", values))
}
ignore <- list(check.conv.singular = "ignore", check.conv.grad = "ignore", check.conv.hess = "ignore")
ctl_bobyqa <- do.call(lmerControl, c(list(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5)), ignore))
ctl_nlopt <- do.call(lmerControl, c(list(optimizer = "nloptwrap",
                                         optCtrl = list(xtol_rel = 1e-12, ftol_rel = 1e-15, maxeval = 1e5)), ignore))
ctl_null <- do.call(lmerControl, c(list(optimizer = NULL, calc.derivs = TRUE), ignore))
crit_of <- function(m, reml) if (reml) REMLcrit(m) else deviance(m)
newton_theta <- function(devf, th, lower, steps = 30) {
  gmax <- function(d, free) if (any(free)) max(abs(d$gradient[free])) else 0
  d <- lme4:::deriv12(devf, th)
  for (i in seq_len(steps)) {
    free <- !(lower == 0 & th <= 1e-7 & d$gradient >= 0)
    th[!free] <- 0
    if (!any(free)) break
    step <- rep(0, length(th))
    step[free] <- solve(d$Hessian[free, free, drop = FALSE], d$gradient[free])
    cand <- pmax(th - step, lower)
    dc <- lme4:::deriv12(devf, cand)
    # accept while the free gradient shrinks (the criterion itself is flat to rounding near the optimum)
    if (gmax(dc, free) >= gmax(d, free)) break
    th <- cand
    d <- dc
    if (max(abs(step)) < 1e-13) break
  }
  list(theta = th, gradient = d$gradient)
}
for (k in seq_len(nrow(jobs))) {
  job <- jobs[k, ]
  data <- read.csv(job$file)
  f <- as.formula(job$formula)
  reml <- as.logical(job$reml)
  fits <- list()
  fits$bobyqa <- lmer(f, data = data, REML = reml, control = ctl_bobyqa)
  fits$nlopt <- lmer(f, data = data, REML = reml, control = ctl_nlopt)
  best <- if (deviance(fits$bobyqa, REML = reml) <= deviance(fits$nlopt, REML = reml)) fits$bobyqa else fits$nlopt
  fits$restart <- lmer(f, data = data, REML = reml, start = list(theta = getME(best, "theta")), control = ctl_nlopt)
  cands <- fits[c("bobyqa", "nlopt", "restart")]
  best <- cands[[which.min(sapply(cands, crit_of, reml = reml))]]
  devf <- lmer(f, data = data, REML = reml, devFunOnly = TRUE)
  nt <- newton_theta(devf, getME(best, "theta"), getME(best, "lower"))
  fits$newton <- lmer(f, data = data, REML = reml, start = list(theta = nt$theta), control = ctl_null)
  add(job$name, "newton", "newton_gradient", names(getME(best, "theta")), nt$gradient)
  if (!is.na(job$theta) && nchar(job$theta) > 0) {
    th <- as.numeric(strsplit(job$theta, " ")[[1]])
    fits$at_fast <- lmer(f, data = data, REML = reml, start = list(theta = th), control = ctl_null)
  }
  for (nm in names(fits)) {
    m <- fits[[nm]]
    crit <- crit_of(m, reml)
    add(job$name, nm, "criterion", "criterion", crit)
    add(job$name, nm, "coef", names(fixef(m)), fixef(m))
    add(job$name, nm, "se", names(fixef(m)), sqrt(diag(as.matrix(vcov(m)))))
    vc <- as.data.frame(VarCorr(m))
    add(job$name, nm, "vcov", paste(vc$grp, vc$var1, vc$var2, sep = "/"), vc$vcov)
    add(job$name, nm, "loglike", "logLik", as.numeric(logLik(m)))
    add(job$name, nm, "theta", names(getME(m, "theta")), getME(m, "theta"))
    d <- m@optinfo$derivs
    if (!is.null(d$gradient)) add(job$name, nm, "gradient", names(getME(m, "theta")), d$gradient)
    if (!is.null(d$Hessian)) add(job$name, nm, "hessian_eigen", seq_along(d$gradient), eigen(d$Hessian)$values)
    add(job$name, nm, "feval", "feval", if (is.null(m@optinfo$feval)) NA else m@optinfo$feval)
  }
}
write.csv(do.call(rbind, out), args[2], row.names = FALSE, quote = TRUE)
cat("lme4", as.character(packageVersion("lme4")), R.version.string, "\n")
