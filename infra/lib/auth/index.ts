/**
 * Tenant identities: a Cognito user pool whose users are created by an operator (scripts/create-tenant-user),
 * each carrying an immutable `custom:tenant_id`, and one public app client the scripts and the UI sign in with.
 */
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as cognito from 'aws-cdk-lib/aws-cognito';
import { Construct } from 'constructs';

export const TENANT_ID_ATTRIBUTE = 'tenant_id';
export const ADMIN_GROUP = 'admin';

/**
 * API Gateway's REST Cognito authorizer hands `cognito:groups` to the Lambda as one string, the names joined
 * by `,` (`"admin"`, `"admin,ops"`), and the gateway matches names exactly: a group named `support,admin`
 * would read as membership of `admin`. So no group is created whose name holds `,`, whitespace or `[` `]`
 * (the HTTP API's form is `"[admin ops]"`). The same rule as `scripts/lib/tenant_names.py` and
 * `metering_core::identity::is_valid_group_name`.
 */
export function assertValidGroupName(name: string): string {
  if (name.length < 1 || name.length > 128 || /[,\[\]\s]/u.test(name)) {
    throw new Error(
      `Cognito group name ${JSON.stringify(name)} is not allowed: API Gateway joins a user's groups with ',', ` +
        'so a name may not contain a comma, whitespace or square brackets',
    );
  }
  return name;
}

export interface TenantAuthProps {
  readonly removalPolicy: RemovalPolicy;
}

export class TenantAuth extends Construct {
  public readonly userPool: cognito.UserPool;
  public readonly userPoolClient: cognito.UserPoolClient;
  public readonly adminGroup: cognito.UserPoolGroup;

  constructor(scope: Construct, id: string, props: TenantAuthProps) {
    super(scope, id);

    this.userPool = new cognito.UserPool(this, 'UserPool', {
      // Tenants are onboarded by the reseller, never by themselves.
      selfSignUpEnabled: false,
      // A username chosen by the operator (scripts/create-tenant-user USERNAME EMAIL TENANT_ID), with the
      // (verified) email address as a sign-in alias.
      signInAliases: { username: true, email: true },
      signInCaseSensitive: false,
      autoVerify: { email: true },
      standardAttributes: { email: { required: true, mutable: true } },
      customAttributes: {
        // Immutable: set once by the operator at creation; the tenant a user meters against never changes.
        [TENANT_ID_ATTRIBUTE]: new cognito.StringAttribute({ minLen: 1, maxLen: 128, mutable: false }),
      },
      passwordPolicy: {
        minLength: 12,
        requireLowercase: true,
        requireUppercase: true,
        requireDigits: true,
        requireSymbols: true,
        tempPasswordValidity: Duration.days(3),
      },
      accountRecovery: cognito.AccountRecovery.EMAIL_ONLY,
      mfa: cognito.Mfa.OPTIONAL,
      mfaSecondFactor: { otp: true, sms: false },
      featurePlan: cognito.FeaturePlan.ESSENTIALS,
      deletionProtection: props.removalPolicy === RemovalPolicy.RETAIN,
      removalPolicy: props.removalPolicy,
    });
    Validations.of(this.userPool).acknowledge({
      id: 'AwsSolutions-COG2',
      reason:
        'MFA is optional (TOTP offered): tenants call the API from programs that sign in with USER_PASSWORD_AUTH ' +
        '(scripts/get-token), which a required second factor would break; passwords are 12+ characters with all classes.',
    });
    Validations.of(this.userPool).acknowledge({
      id: 'AwsSolutions-COG8',
      reason:
        'Essentials feature plan: the Plus plan (threat protection) is billed per monthly active user and the ' +
        'pool only holds operator-created users; revisit when tenants grow.',
    });

    this.adminGroup = this.addGroup('AdminGroup', {
      groupName: ADMIN_GROUP,
      description: 'Operators: may read the usage of every tenant (GET /v1/usage, /v1/usage/{tenant_id})',
    });

    const tenantId = `custom:${TENANT_ID_ATTRIBUTE}`;
    this.userPoolClient = this.userPool.addClient('AppClient', {
      // A public client: scripts and the browser UI cannot keep a secret.
      generateSecret: false,
      authFlows: { userPassword: true, userSrp: true },
      preventUserExistenceErrors: true,
      enableTokenRevocation: true,
      idTokenValidity: Duration.hours(1),
      accessTokenValidity: Duration.hours(1),
      refreshTokenValidity: Duration.days(30),
      // The IdToken carries custom:tenant_id because the client may read it; it may not write it.
      readAttributes: new cognito.ClientAttributes()
        .withStandardAttributes({ email: true, emailVerified: true })
        .withCustomAttributes(tenantId),
      writeAttributes: new cognito.ClientAttributes().withStandardAttributes({ email: true }),
    });
  }

  /** Every group of the pool is created here, so that its name is checked (`assertValidGroupName`). */
  public addGroup(id: string, options: cognito.UserPoolGroupOptions & { groupName: string }): cognito.UserPoolGroup {
    assertValidGroupName(options.groupName);
    return this.userPool.addGroup(id, options);
  }
}
